-- pgmlops: JSON validation
--
-- A JSON Schema subset checked in SQL, so every client (psql, Supabase RPC, edge functions,
-- workers) meets the same rules at write time whether or not pg_jsonschema is installed.
-- Supported keywords: type (one name or an array of names: object, array, string, number,
-- integer, boolean, null), enum, const, minimum, maximum, exclusiveMinimum, exclusiveMaximum,
-- minLength, maxLength, pattern, required, properties, additionalProperties (boolean or schema),
-- items, minItems, maxItems. Unknown keywords are ignored, as JSON Schema does.

-- ml_private.json_schema_errors(p_schema jsonb, p_value jsonb, p_path text default '$') returns text[]
-- Every rule p_value breaks, each as '<path>: <rule broken>' (e.g. '$.sleep_ms: must be of type
-- integer, got string'); an empty array when p_value is valid. Never raises on bad data.
create function ml_private.json_schema_errors(p_schema jsonb, p_value jsonb, p_path text default '$')
returns text[]
language plpgsql immutable
set search_path = ''
as $$
declare
    v_errors  text[] := '{}';
    v_type    text := jsonb_typeof(p_value);
    v_types   text[];
    v_ok      boolean;
    v_key     text;
    v_sub     jsonb;
    v_num     numeric;
    v_len     int;
    v_i       int;
begin
    if p_schema is null or jsonb_typeof(p_schema) <> 'object' then
        return v_errors;
    end if;
    if p_value is null then
        v_type := 'null';
    end if;

    if p_schema ? 'type' then
        v_types := case jsonb_typeof(p_schema -> 'type')
                       when 'array' then array(select jsonb_array_elements_text(p_schema -> 'type'))
                       else array[p_schema ->> 'type'] end;
        v_ok := v_type = any (v_types)
             or (v_type = 'number' and 'integer' = any (v_types) and (p_value #>> '{}')::numeric = trunc((p_value #>> '{}')::numeric));
        if not v_ok then
            return array[format('%s: must be of type %s, got %s', p_path, array_to_string(v_types, ' or '),
                                case when v_type = 'number' and 'integer' = any (v_types) then 'a fraction' else v_type end)];
        end if;
    end if;

    if p_schema ? 'const' and p_value is distinct from p_schema -> 'const' then
        v_errors := v_errors || format('%s: must equal %s', p_path, p_schema -> 'const');
    end if;
    if p_schema ? 'enum' and not exists (select 1 from jsonb_array_elements(p_schema -> 'enum') e where e = p_value) then
        v_errors := v_errors || format('%s: must be one of %s, got %s', p_path, p_schema -> 'enum', coalesce(p_value::text, 'null'));
    end if;

    if v_type = 'number' then
        v_num := (p_value #>> '{}')::numeric;
        if p_schema ? 'minimum' and v_num < (p_schema ->> 'minimum')::numeric then
            v_errors := v_errors || format('%s: must be >= %s, got %s', p_path, p_schema ->> 'minimum', v_num);
        end if;
        if p_schema ? 'maximum' and v_num > (p_schema ->> 'maximum')::numeric then
            v_errors := v_errors || format('%s: must be <= %s, got %s', p_path, p_schema ->> 'maximum', v_num);
        end if;
        if p_schema ? 'exclusiveMinimum' and v_num <= (p_schema ->> 'exclusiveMinimum')::numeric then
            v_errors := v_errors || format('%s: must be > %s, got %s', p_path, p_schema ->> 'exclusiveMinimum', v_num);
        end if;
        if p_schema ? 'exclusiveMaximum' and v_num >= (p_schema ->> 'exclusiveMaximum')::numeric then
            v_errors := v_errors || format('%s: must be < %s, got %s', p_path, p_schema ->> 'exclusiveMaximum', v_num);
        end if;
    elsif v_type = 'string' then
        v_len := length(p_value #>> '{}');
        if p_schema ? 'minLength' and v_len < (p_schema ->> 'minLength')::int then
            v_errors := v_errors || format('%s: must be at least %s characters, got %s', p_path, p_schema ->> 'minLength', v_len);
        end if;
        if p_schema ? 'maxLength' and v_len > (p_schema ->> 'maxLength')::int then
            v_errors := v_errors || format('%s: must be at most %s characters, got %s', p_path, p_schema ->> 'maxLength', v_len);
        end if;
        if p_schema ? 'pattern' and not ((p_value #>> '{}') ~ (p_schema ->> 'pattern')) then
            v_errors := v_errors || format('%s: must match pattern %s', p_path, p_schema ->> 'pattern');
        end if;
    elsif v_type = 'array' then
        v_len := jsonb_array_length(p_value);
        if p_schema ? 'minItems' and v_len < (p_schema ->> 'minItems')::int then
            v_errors := v_errors || format('%s: must have at least %s items, got %s', p_path, p_schema ->> 'minItems', v_len);
        end if;
        if p_schema ? 'maxItems' and v_len > (p_schema ->> 'maxItems')::int then
            v_errors := v_errors || format('%s: must have at most %s items, got %s', p_path, p_schema ->> 'maxItems', v_len);
        end if;
        if jsonb_typeof(p_schema -> 'items') = 'object' then
            for v_i in 0 .. v_len - 1 loop
                v_errors := v_errors || ml_private.json_schema_errors(p_schema -> 'items', p_value -> v_i, format('%s[%s]', p_path, v_i));
            end loop;
        end if;
    elsif v_type = 'object' then
        if p_schema ? 'required' then
            for v_key in select jsonb_array_elements_text(p_schema -> 'required') loop
                if not p_value ? v_key then
                    v_errors := v_errors || format('%s.%s: is required', p_path, v_key);
                end if;
            end loop;
        end if;
        for v_key, v_sub in select key, value from jsonb_each(p_value) loop
            if p_schema -> 'properties' ? v_key then
                v_errors := v_errors || ml_private.json_schema_errors(p_schema -> 'properties' -> v_key, v_sub, p_path || '.' || v_key);
            elsif p_schema -> 'additionalProperties' = 'false'::jsonb then
                v_errors := v_errors || format('%s.%s: is not an allowed property', p_path, v_key);
            elsif jsonb_typeof(p_schema -> 'additionalProperties') = 'object' then
                v_errors := v_errors || ml_private.json_schema_errors(p_schema -> 'additionalProperties', v_sub, p_path || '.' || v_key);
            end if;
        end loop;
    end if;
    return v_errors;
end
$$;

-- ml_private.assert_json_valid(p_field text, p_schema jsonb, p_value jsonb) returns void
-- Raises 22023 naming p_field and every rule broken (the first in the message, all in DETAIL)
-- when p_value breaks p_schema; returns otherwise.
create function ml_private.assert_json_valid(p_field text, p_schema jsonb, p_value jsonb)
returns void
language plpgsql immutable
set search_path = ''
as $$
declare
    v_errors text[] := ml_private.json_schema_errors(p_schema, p_value, '$');
begin
    if cardinality(v_errors) > 0 then
        raise exception '%: %', p_field, v_errors[1]
            using errcode = '22023',
                  detail = format('%s rule(s) broken: %s', cardinality(v_errors), array_to_string(v_errors, '; '));
    end if;
end
$$;

grant execute on function ml_private.json_schema_errors(jsonb, jsonb, text),
                          ml_private.assert_json_valid(text, jsonb, jsonb) to authenticated, service_role;
