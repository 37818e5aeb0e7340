-- pgmlops: monitoring/stats.sql — drift statistics in SQL, equal to scipy and Evidently (docs/drift-statistics.md)
--
-- Pure functions (no tables, no tenant): the drift report calls them on the reference profile
-- and the current window. Each function's header gives its exact definition and the reference
-- (scipy, or Evidently's legacy stattests) it equals, with the tolerance the tests check
-- (tests/test_drift_stats.py).
--
-- Samples (float8[]): NULL, NaN and +-Infinity elements are dropped before anything is computed
-- (Evidently's DataDriftPreset does the same: it replaces +-inf by NaN and drops NaN; scipy would
-- return NaN). A sample with nothing left raises 22023.
-- Counts (float8[], one element per category or bin, aligned between reference and current):
-- finite, >= 0, no NULL elements; both arrays of the same length. Otherwise 22023.
-- Histograms on stored edges use the layout of the reference profiles (docs/monitoring.md): for
-- n + 1 edges, n + 2 counts, counts[1] below the first edge, counts[n + 2] above the last, bin k
-- of ml_private.histogram_bin at counts[k + 1].
--
-- PostgreSQL raises "value out of range: underflow" when a float8 operation rounds a nonzero
-- result to zero (and exp() of a very negative number); the numerical code below flushes such
-- values to zero itself (see the guards on exp and on shrinking products).
--
-- Callers: service_role and the functions of sql/monitoring (all are ml_private, EXECUTE to
-- service_role only).

------------------------------------------------------------------------------------------------
-- Special functions
------------------------------------------------------------------------------------------------

-- ml_private.exp_or_zero(p_x float8) returns float8
-- exp(p_x), or 0 when that underflows (p_x < -745); PostgreSQL's exp() raises there.
create or replace function ml_private.exp_or_zero(p_x float8) returns float8
language sql immutable strict parallel safe
as $$
    select case when p_x < -745 then 0::float8 else pg_catalog.exp(p_x) end
$$;

-- ml_private.stirling_correction(p_x float8) returns float8
-- ln Gamma(x) - ((x - 1/2) ln x - x + ln(2 pi)/2): Stirling's series up to the x^-13 term, for
-- 10 <= p_x < 1e8 (truncation error below 1e-17).
create or replace function ml_private.stirling_correction(p_x float8) returns float8
language sql immutable strict parallel safe
as $$
    select (1 / p_x) * (1.0 / 12 - (1 / (p_x * p_x)) * (1.0 / 360 - (1 / (p_x * p_x)) * (1.0 / 1260
           - (1 / (p_x * p_x)) * (1.0 / 1680 - (1 / (p_x * p_x)) * (1.0 / 1188
           - (1 / (p_x * p_x)) * (691.0 / 360360 - (1 / (p_x * p_x)) / 156))))))
$$;

-- ml_private.log_gamma_stirling(p_x float8) returns float8
-- Stirling's series of ln Gamma(x); for 10 <= p_x < 1e8 (log_gamma's helper).
create or replace function ml_private.log_gamma_stirling(p_x float8) returns float8
language sql immutable strict parallel safe
as $$
    select (p_x - 0.5) * pg_catalog.ln(p_x) - p_x + 0.91893853320467274178 + ml_private.stirling_correction(p_x)
$$;

-- ml_private.log_gamma(p_x float8) returns float8
-- ln Gamma(p_x) for p_x > 0 (scipy.special.gammaln): Stirling's series with seven terms for
-- x >= 10 (truncation error below 1e-17), shifted by ten (Gamma(x) = Gamma(x + 10) / (x (x+1)
-- ... (x+9))) below; absolute error about 1e-15 (relative 1e-15 away from the zeros at 1 and 2).
-- NaN for p_x <= 0.
create or replace function ml_private.log_gamma(p_x float8) returns float8
language sql immutable strict parallel safe
as $$
    select case
        when p_x <= 0 or p_x = 'NaN'::float8 then 'NaN'::float8
        when p_x >= 1e8 then (p_x - 0.5) * pg_catalog.ln(p_x) - p_x + 0.91893853320467274178 + 1 / (12 * p_x)
        when p_x >= 10 then ml_private.log_gamma_stirling(p_x)
        else ml_private.log_gamma_stirling(p_x + 10)
             - pg_catalog.ln(p_x * (p_x + 1) * (p_x + 2) * (p_x + 3) * (p_x + 4)
                             * (p_x + 5) * (p_x + 6) * (p_x + 7) * (p_x + 8) * (p_x + 9))
    end
$$;

-- ml_private.gamma_q(p_a float8, p_x float8) returns float8
-- The regularized upper incomplete gamma function Q(a, x) = Gamma(a, x) / Gamma(a)
-- (scipy.special.gammaincc), for a > 0 and x >= 0: the series of P(a, x) when x < a + 1
-- (Q = 1 - P, and P <= ~0.7 there so nothing cancels), else the continued fraction of Q
-- (modified Lentz). Relative error below 1e-12 against scipy (about 1e-14 for small a) for a up
-- to 5000 and results above 1e-300.
-- Raises 22023 a <= 0, x < 0 or either NaN.
create or replace function ml_private.gamma_q(p_a float8, p_x float8) returns float8
language plpgsql immutable strict parallel safe
as $$
declare
    v_log_prefix float8;
    v_sum float8;
    v_term float8;
    v_ap float8;
    v_b float8;
    v_c float8;
    v_d float8;
    v_h float8;
    v_an float8;
    v_delta float8;
    v_tiny constant float8 := 1e-300;
    i int := 0;
begin
    if not (p_a > 0 and p_a < 'Infinity') or not (p_x >= 0) or p_x = 'NaN'::float8 then
        raise exception 'gamma_q: a must be a positive number and x >= 0, got a = %, x = %', p_a, p_x
            using errcode = '22023';
    end if;
    if p_x = 0 then
        return 1;
    end if;
    if p_x = 'Infinity'::float8 then
        return 0;
    end if;
    -- ln(x^a e^-x / Gamma(a)); for a >= 10 rearranged as a ln(x/a) + (a - x) + ln(a)/2 - ln(2 pi)/2
    -- - stirling_correction(a), so the large terms a ln x and ln Gamma(a) do not cancel
    v_log_prefix := case when p_a >= 10 and p_a < 1e8
                         then p_a * ln(p_x / p_a) + (p_a - p_x) + 0.5 * ln(p_a) - 0.91893853320467274178
                              - ml_private.stirling_correction(p_a)
                         else p_a * ln(p_x) - p_x - ml_private.log_gamma(p_a) end;
    if p_x < p_a + 1 then
        v_ap := p_a;
        v_term := 1 / p_a;
        v_sum := v_term;
        loop
            i := i + 1;
            v_ap := v_ap + 1;
            v_term := v_term * (p_x / v_ap);
            v_sum := v_sum + v_term;
            exit when v_term < v_sum * 1e-17 or i > 100000;
        end loop;
        return 1 - ml_private.exp_or_zero(v_log_prefix + ln(v_sum));
    end if;
    v_b := p_x + 1 - p_a;
    v_c := 1 / v_tiny;
    v_d := 1 / v_b;
    v_h := v_d;
    loop
        i := i + 1;
        v_an := -i * (i - p_a);
        v_b := v_b + 2;
        v_d := v_an * v_d + v_b;
        if abs(v_d) < v_tiny then v_d := v_tiny; end if;
        v_c := v_b + v_an / v_c;
        if abs(v_c) < v_tiny then v_c := v_tiny; end if;
        v_d := 1 / v_d;
        v_delta := v_d * v_c;
        v_h := v_h * v_delta;
        exit when abs(v_delta - 1) < 1e-16 or i > 100000;
    end loop;
    return ml_private.exp_or_zero(v_log_prefix + ln(v_h));
end
$$;

-- ml_private.chi2_sf(p_x float8, p_df float8) returns float8
-- The chi-square survival function P(X >= x) with df degrees of freedom
-- (scipy.stats.chi2.sf(x, df) = scipy.special.chdtrc = gammaincc(df/2, x/2)); 1 for x <= 0,
-- 0 for x = Infinity. Raises 22023 df <= 0 or NaN arguments.
create or replace function ml_private.chi2_sf(p_x float8, p_df float8) returns float8
language plpgsql immutable strict parallel safe
as $$
begin
    if not (p_df > 0) or p_df = 'NaN'::float8 or p_x = 'NaN'::float8 then
        raise exception 'chi2_sf: df must be positive and x a number, got x = %, df = %', p_x, p_df
            using errcode = '22023';
    end if;
    if p_x <= 0 then
        return 1;
    end if;
    return ml_private.gamma_q(p_df / 2, p_x / 2);
end
$$;

-- ml_private.erfc(p_x float8) returns float8
-- The complementary error function 2/sqrt(pi) * integral from x to infinity of exp(-t^2)
-- (scipy.special.erfc; PostgreSQL 15 has no erf). |x| < 1: 1 - erf(x), erf from its series of
-- positive terms 2/sqrt(pi) exp(-x^2) sum 2^k x^(2k+1) / (1*3*...*(2k+1)); x >= 1: Laplace's
-- continued fraction exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))) (modified
-- Lentz, at most ~190 terms); x <= -1: 2 - erfc(-x). exp(-x^2) is taken as exp(-s^2) exp(-(x-s)
-- (x+s)) with s = x rounded down to 1/16 (Cody's device), so large x keep full precision.
-- Relative error below 2e-15 against mpmath for -6 <= x <= 26.5 (scipy's own erfc, which
-- rounds x^2, is off by up to 6e-14 at x = 26); 0 beyond x = 27.3 (underflow).
create or replace function ml_private.erfc(p_x float8) returns float8
language plpgsql immutable strict parallel safe
as $$
declare
    v_x float8 := abs(p_x);
    v_s float8;
    v_exp float8;
    v_term float8;
    v_sum float8;
    v_x2 float8;
    v_c float8;
    v_d float8;
    v_f float8;
    v_delta float8;
    v_a float8;
    i int := 0;
begin
    if p_x = 'NaN'::float8 then
        return 'NaN';
    end if;
    if v_x > 27.3 then
        return case when p_x > 0 then 0 else 2 end;
    end if;
    v_s := trunc(v_x * 16) / 16;
    v_exp := exp(-v_s * v_s) * exp(-(v_x - v_s) * (v_x + v_s));
    if v_x < 1 then
        v_term := v_x;
        v_sum := v_x;
        v_x2 := 2 * v_x * v_x;
        if v_x > 0 then
            loop
                i := i + 1;
                v_term := v_term * v_x2 / (2 * i + 1);
                v_sum := v_sum + v_term;
                exit when v_term < v_sum * 1e-17;
            end loop;
        end if;
        -- erf(|x|) = 1.1283791670955126 (2/sqrt(pi)) * exp(-x^2) * sum
        return case when p_x >= 0 then 1 - 1.1283791670955126 * v_exp * v_sum
                    else 1 + 1.1283791670955126 * v_exp * v_sum end;
    end if;
    v_f := v_x;
    v_c := v_x;
    v_d := 0;
    loop
        i := i + 1;
        v_a := i / 2.0;
        v_d := 1 / (v_x + v_a * v_d);
        v_c := v_x + v_a / v_c;
        v_delta := v_c * v_d;
        v_f := v_f * v_delta;
        exit when abs(v_delta - 1) < 1e-16 or i > 5000;
    end loop;
    -- 0.5641895835477563 = 1/sqrt(pi)
    v_f := (0.5641895835477563 * v_exp) / v_f;
    return case when p_x >= 0 then v_f else 2 - v_f end;
end
$$;

-- ml_private.normal_sf(p_z float8) returns float8
-- The standard normal survival function P(Z >= z) = erfc(z / sqrt(2)) / 2 (scipy.stats.norm.sf),
-- relative error about 2e-15 wherever the result is a normal float8.
create or replace function ml_private.normal_sf(p_z float8) returns float8
language sql immutable strict parallel safe
as $$
    select 0.5 * ml_private.erfc(p_z * 0.70710678118654752440)
$$;

------------------------------------------------------------------------------------------------
-- The Kolmogorov-Smirnov distribution
------------------------------------------------------------------------------------------------

-- ml_private.smirnov_sf(p_n bigint, p_x float8) returns float8
-- The one-sided one-sample Smirnov survival function P(D+_n >= x) (scipy.special.smirnov) for
-- 1/n < x < 1 - 1/n (the cases ml_private.kstwo_sf calls it in). n <= 10000: the Smirnov /
-- Birnbaum-Tingey sum x * sum_{v=0}^{n - floor(n x) - 1} C(n,v) (x + v/n)^(v-1) (1 - x - v/n)^(n-v)
-- (positive terms, each through logs, ln C(n,v) carried from term to term; relative error below
-- 1e-9). Larger n: exp(-(6 n x + 1)^2 / (18 n)),
-- the approximation scipy itself uses above n = 1e6 (absolute error below 0.028 / n, so below
-- 2.8e-6 here).
create or replace function ml_private.smirnov_sf(p_n bigint, p_x float8) returns float8
language plpgsql immutable strict parallel safe
as $$
declare
    v_n float8 := p_n;
    v_nx float8 := p_n * p_x;
    v_sum float8;
    v_logc float8;
    v bigint;
begin
    if p_x <= 0 then
        return 1;
    end if;
    if p_x >= 1 then
        return 0;
    end if;
    if -2 * v_n * p_x * p_x < -708.39 then
        return 0;
    end if;
    if p_n > 10000 then
        return ml_private.exp_or_zero(-((6 * v_nx + 1) ^ 2) / (18 * v_n));
    end if;
    -- ln C(n, v) kept up to date term by term: ln C(n, v+1) = ln C(n, v) + ln((n - v) / (v + 1))
    v_sum := 0;
    v_logc := 0;
    for v in 0 .. p_n - floor(v_nx)::bigint - 1 loop
        exit when v_n - v - v_nx <= 0;
        v_sum := v_sum + ml_private.exp_or_zero(
            v_logc + (v - 1) * ln((v + v_nx) / v_n) + (v_n - v) * ln((v_n - v - v_nx) / v_n));
        v_logc := v_logc + ln((v_n - v) / (v + 1));
    end loop;
    return least(greatest(p_x * coalesce(v_sum, 0), 0), 1);
end
$$;

-- ml_private.kstwo_cdf_pomeranz(p_n int, p_x float8) returns float8
-- P(D_n <= x) of the two-sided one-sample Kolmogorov-Smirnov statistic by Pomeranz's recursion
-- (exact; scipy.stats._ksstats._kolmogn_Pomeranz, ported step for step: two rows of at most
-- 2 (floor(n x) + 1) entries, convolved 2n + 1 times with Poisson-like weights, rescaled by 2^128
-- to stay in range). Used for n <= 140 and n x^2 <= 4.
create or replace function ml_private.kstwo_cdf_pomeranz(p_n int, p_x float8) returns float8
language plpgsql immutable strict parallel safe
as $$
declare
    v_t float8 := p_n * p_x;
    v_ll int := floor(p_n * p_x);
    v_f float8;
    v_g float8;
    v_ceilf int;
    v_roundf int;
    v_npwrs int;
    v_gp float8[];
    v_tgp float8[];
    v_omp float8[];
    v_pw float8[];
    v_v0 float8[];
    v_v1 float8[];
    v_tmp float8[];
    v_v0s int := 0;
    v_v1s int := 0;
    v_tmps int;
    v_j1 int;
    v_j2 int;
    v_k1 int;
    v_ln2 int;
    v_start int;
    v_len int;
    v_expnt int := 0;
    v_acc float8;
    v_max float8;
    v_ans float8;
    v_em128 constant float8 := 2.938735877055719e-39;   -- 2^-128
    v_ep128 constant float8 := 3.402823669209385e+38;   -- 2^128
    i int;
    j int;
    m int;
    c int;
    a int;
    ip1div2 int;
    ip1mod2 int;
begin
    v_f := v_t - v_ll;
    v_g := least(v_f, 1 - v_f);
    v_ceilf := case when v_f > 0 then 1 else 0 end;
    v_roundf := case when v_f > 0.5 then 1 else 0 end;
    v_npwrs := 2 * (v_ll + 1);
    -- gpower[m] = (g/n)^m / m!, twogpower = (2g/n)^m / m!, onem2gpower = ((1-2g)/n)^m / m!
    -- (1-based here: element m + 1). Weights below 1e-150 are flushed to zero: negligible next to
    -- the first (1), and it keeps every product below clear of underflow.
    v_gp := array_fill(0::float8, array[v_npwrs]);
    v_tgp := array_fill(0::float8, array[v_npwrs]);
    v_omp := array_fill(0::float8, array[v_npwrs]);
    v_gp[1] := 1; v_tgp[1] := 1; v_omp[1] := 1;
    for m in 1 .. v_npwrs - 1 loop
        v_gp[m + 1] := case when v_gp[m] < 1e-150 then 0 else v_gp[m] * (v_g / p_n) / m end;
        v_tgp[m + 1] := case when v_tgp[m] < 1e-150 then 0 else v_tgp[m] * (2 * v_g / p_n) / m end;
        v_omp[m + 1] := case when v_omp[m] < 1e-150 then 0 else v_omp[m] * ((1 - 2 * v_g) / p_n) / m end;
    end loop;
    for m in 1 .. v_npwrs loop
        if v_gp[m] < 1e-150 then v_gp[m] := 0; end if;
        if v_tgp[m] < 1e-150 then v_tgp[m] := 0; end if;
        if v_omp[m] < 1e-150 then v_omp[m] := 0; end if;
    end loop;
    v_v0 := array_fill(0::float8, array[v_npwrs]);
    v_v1 := array_fill(0::float8, array[v_npwrs]);
    v_v1[1] := 1;
    -- row 0's interval
    v_j1 := greatest(-v_ll - v_ceilf - 1 + 2, 0);
    v_j2 := least(v_ll + v_ceilf - 1, p_n);
    for i in 1 .. 2 * p_n + 1 loop
        v_k1 := v_j1;
        v_tmp := v_v0; v_v0 := v_v1; v_v1 := v_tmp;
        v_tmps := v_v0s; v_v0s := v_v1s; v_v1s := v_tmps;
        v_v1 := array_fill(0::float8, array[v_npwrs]);
        -- the interval of row i (scipy's _pomeranz_compute_j1j2)
        ip1div2 := (i + 1) / 2;
        ip1mod2 := (i + 1) % 2;
        if ip1mod2 = 0 then
            if ip1div2 = p_n + 1 then
                v_j1 := p_n - v_ll - v_ceilf - 1;
                v_j2 := p_n + v_ll + v_ceilf - 1;
            else
                v_j1 := ip1div2 - 1 - v_ll - v_roundf - 1;
                v_j2 := ip1div2 + v_ll - 1 + v_ceilf - 1;
            end if;
        else
            v_j1 := ip1div2 - 1 - v_ll - 1;
            v_j2 := ip1div2 + v_ll + v_roundf - 1;
        end if;
        v_j1 := greatest(v_j1 + 2, 0);
        v_j2 := least(v_j2, p_n);
        v_pw := case when i = 1 or i = 2 * p_n + 1 then v_gp when i % 2 = 1 then v_tgp else v_omp end;
        v_ln2 := v_j2 - v_k1 + 1;
        if v_ln2 > 0 then
            -- conv = numpy.convolve(V0[k1 - V0s : k1 - V0s + ln2], pwrs[:ln2]); keep
            -- conv[j1 - k1 : j1 - k1 + (j2 - j1 + 1)] as V1[0 : j2 - j1 + 1]
            v_start := v_j1 - v_k1;
            v_len := v_j2 - v_j1 + 1;
            v_max := 0;
            for j in 0 .. v_len - 1 loop
                c := v_start + j;
                v_acc := 0;
                for a in greatest(0, c - v_ln2 + 1) .. least(c, v_ln2 - 1) loop
                    if v_k1 - v_v0s + a < v_npwrs and v_v0[v_k1 - v_v0s + a + 1] <> 0 and v_pw[c - a + 1] <> 0 then
                        v_acc := v_acc + v_v0[v_k1 - v_v0s + a + 1] * v_pw[c - a + 1];
                    end if;
                end loop;
                v_v1[j + 1] := v_acc;
                v_max := greatest(v_max, v_acc);
            end loop;
            -- entries 1e-100 below the row's largest are negligible: flushed (underflow guard)
            for j in 1 .. v_len loop
                if v_v1[j] < v_max * 1e-100 then v_v1[j] := 0; end if;
            end loop;
            if v_max > 0 and v_max < v_em128 then
                for j in 1 .. v_npwrs loop
                    v_v1[j] := v_v1[j] * v_ep128;
                end loop;
                v_expnt := v_expnt - 128;
            end if;
            v_v1s := v_v0s + v_j1 - v_k1;
        end if;
    end loop;
    v_ans := coalesce(v_v1[p_n - v_v1s + 1], 0);
    for m in 1 .. p_n loop
        if abs(v_ans) > v_ep128 then
            v_ans := v_ans * v_em128;
            v_expnt := v_expnt + 128;
        end if;
        v_ans := v_ans * m;
    end loop;
    -- undo the scaling: ans * 2^expnt, in steps that stay in range
    while v_expnt < 0 and v_ans <> 0 loop
        if v_ans < 1e-250 then
            return 0;
        end if;
        v_ans := v_ans * 2 ^ greatest(v_expnt, -128);
        v_expnt := v_expnt - greatest(v_expnt, -128);
    end loop;
    while v_expnt > 0 loop
        v_ans := v_ans * 2 ^ least(v_expnt, 128);
        v_expnt := v_expnt - least(v_expnt, 128);
    end loop;
    return least(greatest(v_ans, 0), 1);
end
$$;

-- ml_private.kstwo_cdf_pelz_good(p_n bigint, p_x float8) returns float8
-- The Pelz-Good approximation of P(D_n <= x) (Li-Chien / Korolyuk's expansion in powers of
-- n^-1/2 up to n^-3/2, transformed with Jacobi's theta functions for small z = x sqrt(n);
-- scipy.stats._ksstats._kolmogn_PelzGood, ported term for term).
create or replace function ml_private.kstwo_cdf_pelz_good(p_n bigint, p_x float8) returns float8
language plpgsql immutable strict parallel safe
as $$
declare
    v_pi2 constant float8 := pi() ^ 2;
    v_pi4 constant float8 := pi() ^ 4;
    v_pi6 constant float8 := pi() ^ 6;
    v_sqrt2pi constant float8 := sqrt(2 * pi());
    v_z float8;
    v_z2 float8; v_z3 float8; v_z4 float8; v_z6 float8;
    v_qlog float8;
    v_q float8;
    v_qpower float8;
    v_k1a float8; v_k1b float8; v_k2a float8; v_k2b float8; v_k2c float8;
    v_k3a float8; v_k3b float8; v_k3c float8; v_k3d float8;
    v_k0 float8 := 0; v_k1 float8 := 0; v_k2 float8 := 0; v_k3 float8 := 0;
    v_m float8;
    v_maxk int;
    v_q2log float8;
    v_qk float8;
    v_extra2 float8 := 0;
    v_extra3 float8 := 0;
    v_n float8 := p_n;
    k int;
begin
    if p_x <= 0 then
        return 0;
    end if;
    if p_x >= 1 then
        return 1;
    end if;
    v_z := sqrt(v_n) * p_x;
    v_z2 := v_z ^ 2; v_z3 := v_z ^ 3; v_z4 := v_z ^ 4; v_z6 := v_z ^ 6;
    v_qlog := -v_pi2 / 8 / v_z2;
    -- scipy returns 0 below qlog = -708; below -650 the result is under 1e-280 anyway, and the
    -- products below would underflow
    if v_qlog < -650 then
        return 0;
    end if;
    v_q := exp(v_qlog);
    v_k1a := -v_z2;
    v_k1b := v_pi2 / 4;
    v_k2a := 6 * v_z6 + 2 * v_z4;
    v_k2b := (2 * v_z4 - 5 * v_z2) * v_pi2 / 4;
    v_k2c := v_pi4 * (1 - 2 * v_z2) / 16;
    v_k3d := v_pi6 * (5 - 30 * v_z2) / 64;
    v_k3c := v_pi4 * (-60 * v_z2 + 212 * v_z4) / 16;
    v_k3b := v_pi2 * (135 * v_z4 - 96 * v_z6) / 4;
    v_k3a := -30 * v_z6 - 90 * v_z ^ 8;
    v_maxk := ceil(16 * v_z / pi());
    for k in reverse v_maxk .. 1 loop
        v_m := 2 * k - 1;
        v_qpower := ml_private.exp_or_zero(8 * k * v_qlog);
        if v_qpower < 1e-280 then
            v_k0 := 0; v_k1 := 0; v_k2 := 0; v_k3 := 0;
        else
            v_k0 := v_k0 * v_qpower; v_k1 := v_k1 * v_qpower; v_k2 := v_k2 * v_qpower; v_k3 := v_k3 * v_qpower;
        end if;
        v_k0 := v_k0 + 1;
        v_k1 := v_k1 + v_k1a + v_k1b * v_m ^ 2;
        v_k2 := v_k2 + v_k2a + v_k2b * v_m ^ 2 + v_k2c * v_m ^ 4;
        v_k3 := v_k3 + v_k3a + v_k3b * v_m ^ 2 + v_k3c * v_m ^ 4 + v_k3d * v_m ^ 6;
    end loop;
    v_k0 := v_k0 * v_q * v_sqrt2pi / v_z;
    v_k1 := v_k1 * v_q * v_sqrt2pi / (6 * v_z4);
    v_k2 := v_k2 * v_q * v_sqrt2pi / (72 * v_z ^ 7);
    v_k3 := v_k3 * v_q * v_sqrt2pi / (6480 * v_z ^ 10);
    v_q2log := -v_pi2 / 2 / v_z2;
    for k in reverse v_maxk .. 1 loop
        v_qk := ml_private.exp_or_zero(k::float8 * k * v_q2log);
        if v_qk > 1e-280 then
            v_extra2 := v_extra2 + k::float8 * k * v_qk;
            v_extra3 := v_extra3 + (sqrt(3.0) * v_z + pi() * k) * (sqrt(3.0) * v_z - pi() * k) * k::float8 * k * v_qk;
        end if;
    end loop;
    v_k2 := v_k2 + v_extra2 * (v_pi2 * v_sqrt2pi / (-36 * v_z3));
    v_k3 := v_k3 + v_extra3 * (v_pi2 * v_sqrt2pi / (216 * v_z6));
    return v_k0 + v_k1 / sqrt(v_n) + v_k2 / v_n + v_k3 / (v_n * sqrt(v_n));
end
$$;

-- ml_private.kstwo_sf(p_d float8, p_n bigint) returns float8
-- P(D_n >= d) of the two-sided one-sample Kolmogorov-Smirnov statistic (scipy.stats.kstwo.sf),
-- with Simard and L'Ecuyer's choice of method as scipy makes it (scipy.stats._ksstats._kolmogn):
--   n d <= 1/2: 1; n d <= 1: 1 - n!/n^n (2 n d - 1)^n (Ruben-Gambino); n d >= n - 1: 2 (1 - d)^n;
--   d >= 1/2: 2 smirnov(n, d) (exact there);
--   n <= 140: n d^2 <= 4 Pomeranz's exact recursion (scipy: Durbin's matrix below 0.754693,
--             also exact), else 2 smirnov(n, d);
--   n > 140: n d^2 >= 370: 0; >= 2.2: 2 smirnov(n, d); else 1 - Pelz-Good (scipy: Durbin's
--             matrix while n <= 100000 and n d^1.5 <= 1.4; Pelz-Good differs from it by at most
--             3.1e-6 over n = 141..300 and less beyond).
-- Absolute error against scipy below 1e-5 over the grids of tests/test_drift_stats.py.
-- NaN when n < 1 (scipy too); raises 22023 d NaN.
create or replace function ml_private.kstwo_sf(p_d float8, p_n bigint) returns float8
language plpgsql immutable strict parallel safe
as $$
declare
    v_n float8 := p_n;
    v_t float8;
    v_nx2 float8;
    v_p float8;
begin
    if p_d = 'NaN'::float8 then
        raise exception 'kstwo_sf: d must be a number, got NaN' using errcode = '22023';
    end if;
    if p_n < 1 then
        return 'NaN';
    end if;
    if p_d >= 1 then
        return 0;
    end if;
    if p_d <= 0 then
        return 1;
    end if;
    v_t := v_n * p_d;
    if v_t <= 1 then
        if v_t <= 0.5 then
            return 1;
        end if;
        return least(greatest(1 - ml_private.exp_or_zero(
            ml_private.log_gamma(v_n + 1) - v_n * ln(v_n) + v_n * ln(2 * v_t - 1)), 0), 1);
    end if;
    if v_t >= v_n - 1 then
        return least(greatest(2 * ml_private.exp_or_zero(v_n * ln(1 - p_d)), 0), 1);
    end if;
    if p_d >= 0.5 then
        return least(greatest(2 * ml_private.smirnov_sf(p_n, p_d), 0), 1);
    end if;
    v_nx2 := v_t * p_d;
    if p_n <= 140 then
        if v_nx2 <= 4 then
            v_p := 1 - ml_private.kstwo_cdf_pomeranz(p_n::int, p_d);
        else
            v_p := 2 * ml_private.smirnov_sf(p_n, p_d);
        end if;
    elsif v_nx2 >= 370 then
        v_p := 0;
    elsif v_nx2 >= 2.2 then
        v_p := 2 * ml_private.smirnov_sf(p_n, p_d);
    else
        v_p := 1 - ml_private.kstwo_cdf_pelz_good(p_n, p_d);
    end if;
    return least(greatest(v_p, 0), 1);
end
$$;

-- ml_private.ks_2samp_pvalue(p_statistic float8, p_n_reference bigint, p_n_current bigint) returns float8
-- The two-sided asymptotic p-value of the two-sample Kolmogorov-Smirnov statistic, as
-- scipy.stats.ks_2samp(..., method='asymp') computes it: kstwo.sf(d, round(m n / (m + n))) with
-- m >= n the two sample sizes and round() half to even (numpy.round; float8 round() here too).
-- NaN when both samples have one value (round(0.5) = 0: scipy returns NaN as well).
-- Raises 22023 a statistic outside [0, 1] or NULL, or a sample size below 1.
-- (Evidently's ks stattest calls ks_2samp with method='auto', which is exact while both samples
-- have at most 10000 values: its p-values differ from these by up to a few 1e-3 there.)
create or replace function ml_private.ks_2samp_pvalue(p_statistic float8, p_n_reference bigint, p_n_current bigint)
returns float8
language plpgsql immutable parallel safe
as $$
declare
    v_m float8 := greatest(p_n_reference, p_n_current);
    v_n float8 := least(p_n_reference, p_n_current);
begin
    if p_statistic is null or not (p_statistic between 0 and 1) then
        raise exception 'statistic: must be between 0 and 1, got %', coalesce(p_statistic::text, 'NULL')
            using errcode = '22023';
    end if;
    if p_n_reference is null or p_n_reference < 1 then
        raise exception 'n_reference: must be at least 1, got %', coalesce(p_n_reference::text, 'NULL') using errcode = '22023';
    end if;
    if p_n_current is null or p_n_current < 1 then
        raise exception 'n_current: must be at least 1, got %', coalesce(p_n_current::text, 'NULL') using errcode = '22023';
    end if;
    return ml_private.kstwo_sf(p_statistic, round(v_m * v_n / (v_m + v_n))::bigint);
end
$$;

------------------------------------------------------------------------------------------------
-- Argument checks
------------------------------------------------------------------------------------------------

-- ml_private.drift_sample_size(p_field text, p_values float8[]) returns bigint
-- How many values of the sample p_values are kept (not NULL, NaN or +-Infinity). Raises 22023,
-- naming p_field, when p_values is NULL or nothing is left.
create or replace function ml_private.drift_sample_size(p_field text, p_values float8[]) returns bigint
language plpgsql immutable parallel safe
as $$
declare
    v_n bigint;
begin
    select count(*) into v_n from unnest(p_values) x
    where x > '-Infinity'::float8 and x < 'Infinity'::float8;   -- NaN sorts above Infinity
    if v_n = 0 then
        raise exception '%: must hold at least one finite value (NULL, NaN and Infinity are dropped), got %',
            p_field, coalesce(left(p_values::text, 200), 'NULL') using errcode = '22023';
    end if;
    return v_n;
end
$$;

-- ml_private.drift_check_counts(p_reference float8[], p_current float8[], p_min_length int default 1) returns void
-- Raises 22023 unless p_reference and p_current are counts aligned element by element: both not
-- NULL, of the same length (at least p_min_length), every element finite and >= 0, and each
-- array's sum positive.
create or replace function ml_private.drift_check_counts(p_reference float8[], p_current float8[], p_min_length int default 1)
returns void
language plpgsql immutable parallel safe
as $$
declare
    v_field text;
    v_counts float8[];
begin
    foreach v_field in array array['reference_counts', 'current_counts'] loop
        v_counts := case v_field when 'reference_counts' then p_reference else p_current end;
        if v_counts is null or cardinality(v_counts) < p_min_length then
            raise exception '%: must be an array of at least % counts, got %', v_field, p_min_length,
                coalesce(left(v_counts::text, 200), 'NULL') using errcode = '22023';
        end if;
        if exists (select 1 from unnest(v_counts) x where x is null or not (x >= 0 and x < 'Infinity'::float8)) then
            raise exception '%: every count must be a finite number >= 0, got %', v_field, left(v_counts::text, 200)
                using errcode = '22023';
        end if;
        if (select sum(x) from unnest(v_counts) x) <= 0 then
            raise exception '%: the counts must not all be 0', v_field using errcode = '22023';
        end if;
    end loop;
    if cardinality(p_reference) <> cardinality(p_current) then
        raise exception 'current_counts: must have as many elements as reference_counts (%), got %',
            cardinality(p_reference), cardinality(p_current) using errcode = '22023';
    end if;
end
$$;

-- ml_private.drift_check_edges(p_edges float8[]) returns void
-- Raises 22023 unless p_edges holds at least 2 finite numbers in ascending order (ties allowed:
-- a reference of one value has the edges v, v).
create or replace function ml_private.drift_check_edges(p_edges float8[]) returns void
language plpgsql immutable parallel safe
as $$
begin
    if p_edges is null or cardinality(p_edges) < 2
       or exists (select 1 from unnest(p_edges) with ordinality e (x, i)
                  where e.x is null or not (e.x > '-Infinity'::float8 and e.x < 'Infinity'::float8)
                     or (e.i > 1 and e.x < p_edges[e.i - 1])) then
        raise exception 'edges: must be at least two finite numbers in ascending order, got %',
            coalesce(left(p_edges::text, 200), 'NULL') using errcode = '22023';
    end if;
end
$$;

------------------------------------------------------------------------------------------------
-- Two samples of numbers: Kolmogorov-Smirnov and Wasserstein (exact mode)
------------------------------------------------------------------------------------------------

-- ml_private.ks_2samp(p_reference float8[], p_current float8[], out statistic float8, out pvalue float8)
-- The two-sample Kolmogorov-Smirnov test (scipy.stats.ks_2samp(reference, current,
-- method='asymp')): statistic = max over every observed value x of |F_ref(x) - F_cur(x)|, F the
-- empirical CDFs counting values <= x (numpy.searchsorted side='right', so ties are handled as
-- scipy does), each F computed as count / n in float8 as numpy does (bit for bit equal);
-- pvalue = ml_private.ks_2samp_pvalue(statistic, n_ref, n_cur). For samples that fit in
-- memory; over tables use the set-based form of docs/drift-statistics.md (the same query).
-- Raises 22023 a sample NULL or without a finite value.
create or replace function ml_private.ks_2samp(p_reference float8[], p_current float8[],
                                               out statistic float8, out pvalue float8)
language plpgsql immutable parallel safe
as $$
declare
    v_n1 bigint := ml_private.drift_sample_size('reference', p_reference);
    v_n2 bigint := ml_private.drift_sample_size('current', p_current);
begin
    -- one sort of both samples; the CDFs are read at the last row of each run of equal values
    with v as (
        select x, 1 as r from unnest(p_reference) x where x > '-Infinity'::float8 and x < 'Infinity'::float8
        union all
        select x, 0 from unnest(p_current) x where x > '-Infinity'::float8 and x < 'Infinity'::float8
    ), cdf as (
        select v.x, lead(v.x) over w as next_x, sum(v.r) over w as cr, count(*) over w as ca
        from v window w as (order by v.x rows between unbounded preceding and current row)
    )
    select max(abs(cdf.cr::float8 / v_n1 - (cdf.ca - cdf.cr)::float8 / v_n2)) into statistic
    from cdf where cdf.next_x is distinct from cdf.x;
    pvalue := ml_private.ks_2samp_pvalue(statistic, v_n1, v_n2);
end
$$;

-- ml_private.wasserstein_distance(p_reference float8[], p_current float8[]) returns float8
-- The first Wasserstein distance between the two samples' empirical distributions
-- (scipy.stats.wasserstein_distance(reference, current)): the integral of |F_ref(x) - F_cur(x)|,
-- i.e. sum over consecutive distinct values x_i < x_i+1 of both samples of
-- |F_ref(x_i) - F_cur(x_i)| * (x_i+1 - x_i). Relative difference from scipy below 1e-12 (only
-- the order of the float8 sum differs). Raises 22023 a sample NULL or without a finite value.
create or replace function ml_private.wasserstein_distance(p_reference float8[], p_current float8[]) returns float8
language plpgsql immutable parallel safe
as $$
declare
    v_n1 bigint := ml_private.drift_sample_size('reference', p_reference);
    v_n2 bigint := ml_private.drift_sample_size('current', p_current);
    v_out float8;
begin
    with v as (
        select x, 1 as r from unnest(p_reference) x where x > '-Infinity'::float8 and x < 'Infinity'::float8
        union all
        select x, 0 from unnest(p_current) x where x > '-Infinity'::float8 and x < 'Infinity'::float8
    ), cdf as (
        select v.x, lead(v.x) over w as next_x, sum(v.r) over w as cr, count(*) over w as ca
        from v window w as (order by v.x rows between unbounded preceding and current row)
    )
    select coalesce(sum(abs(cdf.cr::float8 / v_n1 - (cdf.ca - cdf.cr)::float8 / v_n2) * (cdf.next_x - cdf.x)), 0) into v_out
    from cdf where cdf.next_x > cdf.x;
    return v_out;
end
$$;

-- ml_private.population_std(p_values float8[]) returns float8
-- The population standard deviation (ddof 0, numpy.std) of the finite values of p_values; NULL
-- when there are none. Values beyond 1e150 in magnitude are scaled by a power of two first (exact),
-- so their squares do not overflow (numpy returns inf there).
create or replace function ml_private.population_std(p_values float8[]) returns float8
language plpgsql immutable parallel safe
as $$
declare
    v_max float8;
    v_scale float8 := 1;
    v_std float8;
begin
    select max(abs(x)) into v_max from unnest(p_values) x where x > '-Infinity'::float8 and x < 'Infinity'::float8;
    if v_max > 1e150 then
        v_scale := 2::float8 ^ floor(ln(v_max) / ln(2));
    end if;
    select stddev_pop(x / v_scale) * v_scale into v_std
    from unnest(p_values) x where x > '-Infinity'::float8 and x < 'Infinity'::float8;
    return v_std;
end
$$;

-- ml_private.wasserstein_distance_normed(p_reference float8[], p_current float8[]) returns float8
-- Evidently's "wasserstein" stattest (wasserstein_distance_norm.py): the Wasserstein distance
-- divided by max(std(reference), 0.001), std the POPULATION standard deviation (numpy.std,
-- ddof = 0) of the reference's finite values. Drift when >= 0.1 (Evidently's default threshold).
-- Raises 22023 as ml_private.wasserstein_distance.
create or replace function ml_private.wasserstein_distance_normed(p_reference float8[], p_current float8[]) returns float8
language sql immutable parallel safe
as $$
    select ml_private.wasserstein_distance(p_reference, p_current) / greatest(ml_private.population_std(p_reference), 0.001)
$$;

------------------------------------------------------------------------------------------------
-- Category counts: chi-square and the two-proportion Z-test
------------------------------------------------------------------------------------------------

-- ml_private.chi2_contingency(p_reference_counts float8[], p_current_counts float8[],
--                             out statistic float8, out pvalue float8, out dof int)
-- Pearson's chi-square test of independence on the 2 x k table [reference; current] of category
-- counts (scipy.stats.chi2_contingency(table), correction=True): expected = row sum * column
-- sum / total; dof = k - 1; with dof = 1 Yates' correction moves each observed count towards its
-- expected one by min(0.5, |expected - observed|); statistic = sum (observed - expected)^2 /
-- expected; pvalue = chi2.sf(statistic, dof). A category counted on one side only (unseen in the
-- reference, or gone from the current window) is a column with a 0: tested like any other.
-- A category counted on neither side is left out (scipy refuses such a table: an expected
-- frequency would be 0). One category left (dof = 0): statistic 0, pvalue 1, as scipy.
-- Statistic within 1e-12 relative of scipy, pvalue within 1e-12 absolute / 1e-9 relative.
-- Raises 22023 counts that are not aligned finite non-negative numbers with a positive sum.
create or replace function ml_private.chi2_contingency(p_reference_counts float8[], p_current_counts float8[],
                                                       out statistic float8, out pvalue float8, out dof int)
language plpgsql immutable parallel safe
as $$
declare
    v_r float8;
    v_c float8;
begin
    perform ml_private.drift_check_counts(p_reference_counts, p_current_counts);
    select sum(t.r), sum(t.c), count(*) - 1 into v_r, v_c, dof
    from unnest(p_reference_counts, p_current_counts) t (r, c) where t.r + t.c > 0;
    if dof = 0 then
        statistic := 0;
        pvalue := 1;
        return;
    end if;
    with cells as (
        select o.observed, o.expected
        from unnest(p_reference_counts, p_current_counts) with ordinality t (r, c, i)
        cross join lateral (values (0, t.r, v_r * (t.r + t.c) / (v_r + v_c)),
                                   (1, t.c, v_c * (t.r + t.c) / (v_r + v_c))) o (side, observed, expected)
        where t.r + t.c > 0
    )
    select sum((o2 - cells.expected) ^ 2 / cells.expected) into statistic
    from cells, lateral (select case when dof = 1
                                     then cells.observed + sign(cells.expected - cells.observed)
                                          * least(0.5, abs(cells.expected - cells.observed))
                                     else cells.observed end as o2) y;
    pvalue := ml_private.chi2_sf(statistic, dof);
end
$$;

-- ml_private.chisquare_goodness_of_fit(p_reference_counts float8[], p_current_counts float8[],
--                                      out statistic float8, out pvalue float8)
-- Evidently's "chisquare" stattest (chisquare_stattest.py), the one its DataDriftPreset picks for
-- a categorical feature of more than 2 values and a reference of at most 1000 rows: Pearson's
-- goodness of fit of the current counts to the reference frequencies, scipy.stats.chisquare(
-- f_obs = current counts, f_exp = reference counts * (n_current / n_reference)), dof = k - 1.
-- A category seen only in the current window has an expected count 0: statistic Infinity,
-- pvalue 0 (numpy divides by zero; Evidently reports drift). Categories counted on neither side
-- are left out; a single category left gives statistic 0 and pvalue NaN (scipy: chi2.sf(0, 0)).
-- Drift when pvalue < 0.05. Same tolerances and errors as ml_private.chi2_contingency.
create or replace function ml_private.chisquare_goodness_of_fit(p_reference_counts float8[], p_current_counts float8[],
                                                                out statistic float8, out pvalue float8)
language plpgsql immutable parallel safe
as $$
declare
    v_norm float8;
    v_k bigint;
begin
    perform ml_private.drift_check_counts(p_reference_counts, p_current_counts);
    v_norm := (select sum(x) from unnest(p_current_counts) x) / (select sum(x) from unnest(p_reference_counts) x);
    select sum(case when t.r * v_norm = 0 then 'Infinity'::float8 else (t.c - t.r * v_norm) ^ 2 / (t.r * v_norm) end),
           count(*)
    into statistic, v_k
    from unnest(p_reference_counts, p_current_counts) t (r, c) where t.r + t.c > 0;
    pvalue := case when v_k = 1 then 'NaN'::float8
                   when statistic = 'Infinity'::float8 then 0
                   else ml_private.chi2_sf(statistic, v_k - 1) end;
end
$$;

-- ml_private.proportions_z_test(p_reference_counts float8[], p_current_counts float8[],
--                               out statistic float8, out pvalue float8)
-- Evidently's "z" stattest (z_stattest.py), the one its DataDriftPreset picks for a feature of at
-- most 2 values and a reference of at most 1000 rows: the two-proportion Z-test with pooled
-- variance. The arrays count the two values in the same order, the first being Evidently's
-- keys[0] (the smaller value in sorted order); a 1-element array is a feature with one value.
-- p1, p2 = share of the second value in reference and current, P = (p1 n1 + p2 n2) / (n1 + n2),
-- statistic = (p1 - p2) / sqrt(P (1 - P) (1/n1 + 1/n2)), pvalue = 2 * normal_sf(|statistic|).
-- Both samples holding the one same value: statistic 0, pvalue 1 (Evidently's special case).
-- Evidently computes the p-value as 2 * (1 - norm.cdf(|z|)); the two differ by at most 2.3e-16
-- (Evidently's is 0 beyond |z| = 8.3; this one keeps its precision). Drift when pvalue < 0.05.
-- Raises 22023 counts not aligned, not finite and >= 0, with a zero sum, or of more than 2 values.
create or replace function ml_private.proportions_z_test(p_reference_counts float8[], p_current_counts float8[],
                                                         out statistic float8, out pvalue float8)
language plpgsql immutable parallel safe
as $$
declare
    v_n1 float8;
    v_n2 float8;
    v_p1 float8;
    v_p2 float8;
    v_pooled float8;
begin
    perform ml_private.drift_check_counts(p_reference_counts, p_current_counts);
    if cardinality(p_reference_counts) > 2 then
        raise exception 'reference_counts: a binary feature has at most 2 values, got % counts',
            cardinality(p_reference_counts) using errcode = '22023';
    end if;
    v_n1 := (select sum(x) from unnest(p_reference_counts) x);
    v_n2 := (select sum(x) from unnest(p_current_counts) x);
    v_p1 := coalesce(p_reference_counts[2], 0) / v_n1;
    v_p2 := coalesce(p_current_counts[2], 0) / v_n2;
    v_pooled := (v_p1 * v_n1 + v_p2 * v_n2) / (v_n1 + v_n2);
    if (v_p1 = 0 and v_p2 = 0) or (v_p1 = 1 and v_p2 = 1) then
        statistic := 0;
        pvalue := 1;
        return;
    end if;
    statistic := (v_p1 - v_p2) / sqrt(v_pooled * (1 - v_pooled) * (1.0 / v_n1 + 1.0 / v_n2));
    pvalue := least(2 * ml_private.normal_sf(abs(statistic)), 1);
end
$$;

------------------------------------------------------------------------------------------------
-- Binned distributions: PSI, Jensen-Shannon, Hellinger (counts per category or per bin)
------------------------------------------------------------------------------------------------

-- ml_private.psi(p_reference_counts float8[], p_current_counts float8[]) returns float8
-- Evidently's "psi" stattest (psi.py, get_binned_data with feel_zeroes): with shares r_i =
-- reference count / reference total and c_i likewise, PSI = sum (r_i - c_i) ln(r_i / c_i).
-- Zero-bin rule (Evidently's, each side on its own): a share of 0 is replaced by 0.0001, or by
-- (the side's smallest nonzero share) / 10^6 when that smallest share is itself <= 0.0001.
-- Evidently bins a numeric feature on Sturges edges of reference and current together; the
-- drift report passes the bins it has (the reference profile's, with under- and overflow).
-- Drift when >= 0.1. Within 1e-12 relative of Evidently's formula on the same counts.
-- Raises 22023 counts not aligned, not finite and >= 0, or summing to 0.
create or replace function ml_private.psi(p_reference_counts float8[], p_current_counts float8[]) returns float8
language plpgsql immutable parallel safe
as $$
declare
    v_out float8;
begin
    perform ml_private.drift_check_counts(p_reference_counts, p_current_counts);
    with shares as (
        select t.r / sum(t.r) over () as r, t.c / sum(t.c) over () as c
        from unnest(p_reference_counts, p_current_counts) t (r, c)
    ), fills as (
        select (select case when min(r) <= 0.0001 then min(r) / 1e6 else 0.0001 end from shares where r > 0) as fr,
               (select case when min(c) <= 0.0001 then min(c) / 1e6 else 0.0001 end from shares where c > 0) as fc
    )
    select sum((y.r - y.c) * ln(y.r / y.c)) into v_out
    from shares s cross join fills f,
         lateral (select case when s.r = 0 then f.fr else s.r end as r, case when s.c = 0 then f.fc else s.c end as c) y;
    return v_out;
end
$$;

-- ml_private.jensenshannon(p_reference_counts float8[], p_current_counts float8[]) returns float8
-- The Jensen-Shannon distance (scipy.spatial.distance.jensenshannon(p, q), natural log), as
-- Evidently's "jensenshannon" stattest computes it (get_binned_data without the zero-bin rule):
-- p, q the two sides' shares, m = (p + q) / 2, distance = sqrt((KL(p || m) + KL(q || m)) / 2),
-- a 0 share contributing 0. Between 0 and sqrt(ln 2). Drift when >= 0.1 (Evidently's default for
-- categorical features and references of more than 1000 rows). Within 1e-12 of scipy.
-- Raises 22023 counts not aligned, not finite and >= 0, or summing to 0.
create or replace function ml_private.jensenshannon(p_reference_counts float8[], p_current_counts float8[]) returns float8
language plpgsql immutable parallel safe
as $$
declare
    v_out float8;
begin
    perform ml_private.drift_check_counts(p_reference_counts, p_current_counts);
    with shares as (
        select t.r / sum(t.r) over () as p, t.c / sum(t.c) over () as q
        from unnest(p_reference_counts, p_current_counts) t (r, c)
    )
    select sqrt(greatest(
               (coalesce(sum(s.p * ln(s.p / ((s.p + s.q) / 2))) filter (where s.p > 0), 0)
                + coalesce(sum(s.q * ln(s.q / ((s.p + s.q) / 2))) filter (where s.q > 0), 0)) / 2, 0))
    into v_out from shares s;
    return v_out;
end
$$;

-- ml_private.hellinger(p_reference_counts float8[], p_current_counts float8[]) returns float8
-- Evidently's "hellinger" stattest (hellinger_distance.py): with shares p, q,
-- H = sqrt(1 - clip(sum sqrt(p_i q_i), 0, 1)) (the Hellinger distance normalized to [0, 1]).
-- Evidently bins a numeric feature on Sturges edges of the distinct values of both samples;
-- here the bins are the caller's. Drift when >= 0.1. Within 1e-12 of Evidently's formula.
-- Raises 22023 counts not aligned, not finite and >= 0, or summing to 0.
create or replace function ml_private.hellinger(p_reference_counts float8[], p_current_counts float8[]) returns float8
language plpgsql immutable parallel safe
as $$
declare
    v_out float8;
begin
    perform ml_private.drift_check_counts(p_reference_counts, p_current_counts);
    select sqrt(1 - least(greatest(sum(sqrt(s.p * s.q)), 0), 1)) into v_out
    from (select t.r / sum(t.r) over () as p, t.c / sum(t.c) over () as q
          from unnest(p_reference_counts, p_current_counts) t (r, c)) s;
    return v_out;
end
$$;

------------------------------------------------------------------------------------------------
-- Fast mode: Wasserstein and Kolmogorov-Smirnov on histograms of stored edges
------------------------------------------------------------------------------------------------

-- An earlier draft of wasserstein_binned named its last two parameters differently (a rename
-- needs a drop).
drop function if exists ml_private.wasserstein_binned(float8[], float8[], float8[], float8[], float8[]);

-- ml_private.wasserstein_binned(p_edges float8[], p_reference_counts float8[], p_current_counts float8[],
--                               p_reference_sums float8[] default null, p_current_sums float8[] default null)
-- returns float8
-- The Wasserstein-1 distance (the integral of |F_ref - F_cur|) from two histograms on the same
-- n + 1 ascending edges, counts in the profiles' layout (n + 2: below, the n bins, above).
-- With the sums of the values in each of those n + 2 cells (p_*_sums, same layout; what
-- ml.window_counts keeps as `total`): the integral of F_ref - F_cur over each bin is exact
-- (integral of F over [e_k, e_k+1] = F(e_k) (e_k+1 - e_k) + (count e_k+1 - sum) / N), and so are
-- the integrals beyond the edges ((count e_1 - sum) / N below, (sum - count e_n+1) / N above);
-- the distance is the sum of their absolute values. That is exact whenever F_ref - F_cur keeps
-- its sign within each bin, and never more than the exact distance otherwise (measured in
-- docs/drift-statistics.md: within 0.3% of exact on drifted normal and lognormal samples with
-- 20 quantile bins). Without sums (both NULL): each bin's mass is spread uniformly over it (both
-- CDFs linear between the edges, the integral of |difference| exact for that model) and
-- under/overflow mass sits on the edge: coarse where bins are wide (quantile tails of skewed
-- data: several times the exact value on lognormal samples).
-- Raises 22023 edges not ascending finite numbers (at least 2), counts not n + 2 aligned
-- non-negative numbers with a positive sum, sums given for one side only or not n + 2 finite
-- numbers.
create or replace function ml_private.wasserstein_binned(p_edges float8[], p_reference_counts float8[], p_current_counts float8[],
                                                         p_reference_sums float8[] default null,
                                                         p_current_sums float8[] default null)
returns float8
language plpgsql immutable parallel safe
as $$
declare
    v_n int := coalesce(cardinality(p_edges), 0);
    v_r float8;
    v_c float8;
    v_d0 float8;
    v_d1 float8;
    v_w float8;
    v_total float8;
    v_sums boolean := p_reference_sums is not null;
    k int;
begin
    perform ml_private.drift_check_edges(p_edges);
    perform ml_private.drift_check_counts(p_reference_counts, p_current_counts, 3);
    if cardinality(p_reference_counts) <> v_n + 1 then
        raise exception 'reference_counts: must have % counts for % edges (below, % bins, above), got %',
            v_n + 1, v_n, v_n - 1, cardinality(p_reference_counts) using errcode = '22023';
    end if;
    if (p_reference_sums is null) <> (p_current_sums is null) then
        raise exception '%: sums must be given for both sides or neither',
            case when p_reference_sums is null then 'reference_sums' else 'current_sums' end using errcode = '22023';
    end if;
    if v_sums then
        foreach k in array array[1, 2] loop
            if cardinality(case k when 1 then p_reference_sums else p_current_sums end) <> v_n + 1
               or exists (select 1 from unnest(case k when 1 then p_reference_sums else p_current_sums end) x
                          where x is null or not (x > '-Infinity'::float8 and x < 'Infinity'::float8)) then
                raise exception '%: must be % finite numbers (the sum of the values below, in each bin, above), got %',
                    case k when 1 then 'reference_sums' else 'current_sums' end, v_n + 1,
                    left((case k when 1 then p_reference_sums else p_current_sums end)::text, 200) using errcode = '22023';
            end if;
        end loop;
    end if;
    v_r := (select sum(x) from unnest(p_reference_counts) x);
    v_c := (select sum(x) from unnest(p_current_counts) x);
    -- below the first edge: integral of F = (count e_1 - sum) / N
    v_total := case when v_sums
                    then abs((p_reference_counts[1] * p_edges[1] - p_reference_sums[1]) / v_r
                             - (p_current_counts[1] * p_edges[1] - p_current_sums[1]) / v_c)
                    else 0 end;
    -- D = F_ref - F_cur at the left edge of each bin
    v_d0 := p_reference_counts[1] / v_r - p_current_counts[1] / v_c;
    for k in 1 .. v_n - 1 loop
        v_d1 := v_d0 + (p_reference_counts[k + 1] / v_r - p_current_counts[k + 1] / v_c);
        v_w := p_edges[k + 1] - p_edges[k];
        if v_sums then
            v_total := v_total + abs(v_d0 * v_w
                + (p_reference_counts[k + 1] * p_edges[k + 1] - p_reference_sums[k + 1]) / v_r
                - (p_current_counts[k + 1] * p_edges[k + 1] - p_current_sums[k + 1]) / v_c);
        elsif v_w > 0 then
            if (v_d0 >= 0 and v_d1 >= 0) or (v_d0 <= 0 and v_d1 <= 0) then
                v_total := v_total + v_w * abs(v_d0 + v_d1) / 2;
            else
                v_total := v_total + v_w * (v_d0 * v_d0 + v_d1 * v_d1) / (2 * (abs(v_d0) + abs(v_d1)));
            end if;
        end if;
        v_d0 := v_d1;
    end loop;
    -- above the last edge: integral of 1 - F = (sum - count e_n+1) / N
    if v_sums then
        v_total := v_total + abs((p_reference_sums[v_n + 1] - p_reference_counts[v_n + 1] * p_edges[v_n]) / v_r
                                 - (p_current_sums[v_n + 1] - p_current_counts[v_n + 1] * p_edges[v_n]) / v_c);
    end if;
    return v_total;
end
$$;

-- ml_private.ks_binned(p_reference_counts float8[], p_current_counts float8[], out statistic float8, out pvalue float8)
-- The Kolmogorov-Smirnov statistic of two histograms on the same bins (any layout, in order):
-- max over the bin boundaries of |F_ref - F_cur|, F the cumulative shares. It is the exact KS
-- statistic of the samples rounded to their bins, and never more than the exact statistic of
-- the raw samples (the largest gap may fall inside a bin). pvalue =
-- ml_private.ks_2samp_pvalue(statistic, n_ref, n_cur) with the totals of the counts.
-- Raises 22023 counts not aligned, not finite and >= 0, or summing to 0.
create or replace function ml_private.ks_binned(p_reference_counts float8[], p_current_counts float8[],
                                                out statistic float8, out pvalue float8)
language plpgsql immutable parallel safe
as $$
declare
    v_r float8;
    v_c float8;
begin
    perform ml_private.drift_check_counts(p_reference_counts, p_current_counts);
    v_r := (select sum(x) from unnest(p_reference_counts) x);
    v_c := (select sum(x) from unnest(p_current_counts) x);
    select max(abs(s.cr / v_r - s.cc / v_c)) into statistic
    from (select sum(t.r) over w as cr, sum(t.c) over w as cc
          from unnest(p_reference_counts, p_current_counts) with ordinality t (r, c, i)
          window w as (order by t.i rows between unbounded preceding and current row)) s;
    pvalue := ml_private.ks_2samp_pvalue(statistic, round(v_r)::bigint, round(v_c)::bigint);
end
$$;

------------------------------------------------------------------------------------------------
-- Grants
------------------------------------------------------------------------------------------------

grant execute on function
    ml_private.exp_or_zero(float8),
    ml_private.stirling_correction(float8),
    ml_private.log_gamma_stirling(float8),
    ml_private.log_gamma(float8),
    ml_private.gamma_q(float8, float8),
    ml_private.chi2_sf(float8, float8),
    ml_private.erfc(float8),
    ml_private.normal_sf(float8),
    ml_private.smirnov_sf(bigint, float8),
    ml_private.kstwo_cdf_pomeranz(int, float8),
    ml_private.kstwo_cdf_pelz_good(bigint, float8),
    ml_private.kstwo_sf(float8, bigint),
    ml_private.ks_2samp_pvalue(float8, bigint, bigint),
    ml_private.drift_sample_size(text, float8[]),
    ml_private.drift_check_counts(float8[], float8[], int),
    ml_private.drift_check_edges(float8[]),
    ml_private.ks_2samp(float8[], float8[]),
    ml_private.wasserstein_distance(float8[], float8[]),
    ml_private.population_std(float8[]),
    ml_private.wasserstein_distance_normed(float8[], float8[]),
    ml_private.chi2_contingency(float8[], float8[]),
    ml_private.chisquare_goodness_of_fit(float8[], float8[]),
    ml_private.proportions_z_test(float8[], float8[]),
    ml_private.psi(float8[], float8[]),
    ml_private.jensenshannon(float8[], float8[]),
    ml_private.hellinger(float8[], float8[]),
    ml_private.wasserstein_binned(float8[], float8[], float8[], float8[], float8[]),
    ml_private.ks_binned(float8[], float8[])
to service_role;
