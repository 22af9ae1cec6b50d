-- MadBase Auth: sessions, access-token claims and refresh-token rotation as functions, so that
-- each Auth request is one statement batch (one round trip) and every step of a grant happens in
-- one transaction. They run as supabase_auth_admin (the role Auth's batches switch to).

-- The claims of an access token for user `u` in session `p_session` (reference/auth.md §2.3), in
-- GoTrue's order. `aal` and `amr` come from the session's authentication-method rows: aal2 once
-- any of them is a second factor; `amr` most recent first.
create or replace function _madbase.auth_claims(u auth.users, p_session uuid, p_iss text, p_iat bigint, p_exp bigint)
returns json
language sql stable
set search_path = ''
as $$
  with amr as (
    select c.authentication_method as method, floor(extract(epoch from c.updated_at))::bigint as ts, c.updated_at as at
    from auth.mfa_amr_claims c
    where c.session_id = p_session
  )
  select json_build_object(
    'iss', p_iss,
    'sub', u.id,
    'aud', coalesce(u.aud, ''),
    'exp', p_exp,
    'iat', p_iat,
    'email', coalesce(u.email, ''),
    'phone', coalesce(u.phone, ''),
    'app_metadata', coalesce(u.raw_app_meta_data, '{}'::jsonb),
    'user_metadata', coalesce(u.raw_user_meta_data, '{}'::jsonb),
    'role', coalesce(u.role, ''),
    'aal', case when exists (select 1 from amr where method in ('totp', 'mfa/phone', 'mfa/webauthn'))
                then 'aal2' else 'aal1' end,
    'amr', coalesce((select json_agg(json_build_object('method', method, 'timestamp', ts) order by at desc, method) from amr),
                    '[]'::json),
    'session_id', p_session,
    'is_anonymous', coalesce(u.is_anonymous, false)
  )
$$;

-- Starts a session: the session row, its first authentication method, its first refresh token,
-- the user's (and identity's) last sign-in, and the audit row.
create or replace function _madbase.auth_start_session(
  p_user uuid, p_session uuid, p_refresh_token text, p_method text, p_aal text, p_factor uuid,
  p_ip text, p_user_agent text, p_not_after timestamptz, p_provider text
) returns void
language plpgsql volatile
set search_path = ''
as $$
begin
  insert into auth.sessions (id, user_id, created_at, updated_at, factor_id, aal, not_after, user_agent, ip, refreshed_at)
  values (p_session, p_user, now(), now(), p_factor, p_aal::auth.aal_level, p_not_after, p_user_agent,
          nullif(p_ip, '')::inet, now()::timestamp);
  insert into auth.mfa_amr_claims (id, session_id, created_at, updated_at, authentication_method)
  values (gen_random_uuid(), p_session, now(), now(), p_method);
  insert into auth.refresh_tokens (instance_id, token, user_id, revoked, created_at, updated_at, parent, session_id)
  values ('00000000-0000-0000-0000-000000000000', p_refresh_token, p_user::text, false, now(), now(), null, p_session);
  update auth.users set last_sign_in_at = now(), updated_at = now() where id = p_user;
  if p_provider is not null then
    update auth.identities set last_sign_in_at = now(), updated_at = now()
    where user_id = p_user and provider = p_provider;
  end if;
  perform _madbase.auth_audit(p_user, 'login', p_ip, json_build_object('provider', coalesce(p_provider, p_method)));
end
$$;

-- One audit-log row, in GoTrue's payload shape.
create or replace function _madbase.auth_audit(p_user uuid, p_action text, p_ip text, p_traits json)
returns void
language sql volatile
set search_path = ''
as $$
  insert into auth.audit_log_entries (instance_id, id, payload, created_at, ip_address)
  select '00000000-0000-0000-0000-000000000000', gen_random_uuid(),
         json_build_object('actor_id', coalesce(u.id::text, ''), 'actor_username', coalesce(u.email, u.phone, ''),
                           'actor_via_sso', coalesce(u.is_sso_user, false), 'action', p_action,
                           'log_type', case p_action
                                         when 'login' then 'account' when 'logout' then 'account'
                                         when 'user_signedup' then 'team' when 'user_deleted' then 'team'
                                         when 'token_refreshed' then 'token' when 'token_revoked' then 'token'
                                         else 'user' end,
                           'traits', p_traits),
         now(), coalesce(p_ip, '')
  from (select 1) one left join auth.users u on u.id = p_user
$$;

-- The refresh-token grant (GoTrue's rules, reference/auth.md §2.4): finds and locks the token and
-- its session, checks the user and the session's validity, then rotates: a live token is revoked
-- and gets a child; a revoked token that is the parent of the live one, or that was revoked
-- within the reuse interval, is answered with the live token (concurrent tabs, lost responses);
-- a revoked token past the interval revokes the session's whole family. Errors are returned as
-- GoTrue codes (not raised) so that a family revocation commits.
create or replace function _madbase.auth_refresh(
  p_token text, p_new_token text, p_rotation boolean, p_reuse_interval integer,
  p_timebox interval, p_inactivity interval, p_ip text
) returns table (error text, user_id uuid, session_id uuid, refresh_token text)
language plpgsql volatile
set search_path = ''
as $$
declare
  t auth.refresh_tokens;
  s auth.sessions;
  u auth.users;
  live auth.refresh_tokens;
  answer text;
begin
  select * into t from auth.refresh_tokens r where r.token = p_token for update;
  if not found then
    return query select 'refresh_token_not_found'::text, null::uuid, null::uuid, null::text;
    return;
  end if;
  select * into u from auth.users x where x.id::text = t.user_id;
  if not found then
    return query select 'refresh_token_not_found'::text, null::uuid, null::uuid, null::text;
    return;
  end if;
  if u.banned_until is not null and u.banned_until > now() then
    return query select 'user_banned'::text, u.id, null::uuid, null::text;
    return;
  end if;
  select * into s from auth.sessions x where x.id = t.session_id for update;
  if not found then
    return query select 'session_not_found'::text, u.id, null::uuid, null::text;
    return;
  end if;
  if (s.not_after is not null and s.not_after < now())
     or (p_timebox is not null and s.created_at + p_timebox < now()) then
    return query select 'session_expired'::text, u.id, s.id, null::text;
    return;
  end if;
  if p_inactivity is not null
     and coalesce(s.refreshed_at::timestamptz, t.updated_at, s.created_at) + p_inactivity < now() then
    return query select 'session_expired_inactivity'::text, u.id, s.id, null::text;
    return;
  end if;
  if t.revoked then
    select * into live from auth.refresh_tokens r
    where r.session_id = s.id and not r.revoked order by r.id desc limit 1;
    if live.token is not null
       and (live.parent = t.token or t.updated_at + make_interval(secs => p_reuse_interval) >= now()) then
      answer := live.token;
    else
      if p_rotation then
        update auth.refresh_tokens r set revoked = true, updated_at = now()
        where r.session_id = s.id and not r.revoked;
        perform _madbase.auth_audit(u.id, 'token_revoked', p_ip, '{}'::json);
      end if;
      return query select 'refresh_token_already_used'::text, u.id, s.id, null::text;
      return;
    end if;
  elsif p_rotation then
    update auth.refresh_tokens r set revoked = true, updated_at = now() where r.id = t.id;
    insert into auth.refresh_tokens (instance_id, token, user_id, revoked, created_at, updated_at, parent, session_id)
    values ('00000000-0000-0000-0000-000000000000', p_new_token, t.user_id, false, now(), now(), t.token, s.id);
    answer := p_new_token;
  else
    answer := t.token;
  end if;
  update auth.sessions x set refreshed_at = now()::timestamp, updated_at = now(),
         ip = coalesce(nullif(p_ip, '')::inet, x.ip)
  where x.id = s.id;
  perform _madbase.auth_audit(u.id, 'token_refreshed', p_ip, '{}'::json);
  return query select null::text, u.id, s.id, answer;
end
$$;

revoke all on function _madbase.auth_claims(auth.users, uuid, text, bigint, bigint) from public;
revoke all on function _madbase.auth_start_session(uuid, uuid, text, text, text, uuid, text, text, timestamptz, text) from public;
revoke all on function _madbase.auth_audit(uuid, text, text, json) from public;
revoke all on function _madbase.auth_refresh(text, text, boolean, integer, interval, interval, text) from public;
grant execute on function _madbase.auth_claims(auth.users, uuid, text, bigint, bigint) to supabase_auth_admin;
grant execute on function _madbase.auth_start_session(uuid, uuid, text, text, text, uuid, text, text, timestamptz, text) to supabase_auth_admin;
grant execute on function _madbase.auth_audit(uuid, text, text, json) to supabase_auth_admin;
grant execute on function _madbase.auth_refresh(text, text, boolean, integer, interval, interval, text) to supabase_auth_admin;

-- Aborts the batch when a guarding hook (before_user_created) answers with an error: the
-- SQLSTATE is MadBase's own, the detail the HTTP status the hook asked for (500 when none).
create or replace function _madbase.auth_hook_guard(p_answer jsonb)
returns void
language plpgsql immutable
set search_path = ''
as $$
begin
  if jsonb_typeof(p_answer -> 'error') = 'object' and coalesce(p_answer -> 'error' ->> 'message', '') <> '' then
    raise exception using errcode = 'MBHK1', message = p_answer -> 'error' ->> 'message',
      detail = coalesce(p_answer -> 'error' ->> 'http_code', '500');
  end if;
end
$$;
revoke all on function _madbase.auth_hook_guard(jsonb) from public;
grant execute on function _madbase.auth_hook_guard(jsonb) to supabase_auth_admin;

-- The check at the head of every user endpoint's batch: the token's user must exist (SQLSTATE
-- MBAU1, GoTrue's user_not_found) and, when the token names a session, so must the session
-- (MBAU2, session_not_found): a signed-out session's tokens stop working at once.
create or replace function _madbase.auth_require_session(p_user uuid, p_session uuid)
returns void
language plpgsql stable
set search_path = ''
as $$
begin
  if not exists (select 1 from auth.users u where u.id = p_user) then
    raise exception using errcode = 'MBAU1', message = 'User from sub claim in JWT does not exist';
  end if;
  if p_session is not null and not exists (select 1 from auth.sessions s where s.id = p_session and s.user_id = p_user) then
    raise exception using errcode = 'MBAU2', message = 'Session from session_id claim in JWT does not exist';
  end if;
end
$$;
revoke all on function _madbase.auth_require_session(uuid, uuid) from public;
grant execute on function _madbase.auth_require_session(uuid, uuid) to supabase_auth_admin;
