-- MadBase Auth: TOTP multi-factor authentication (reference/auth.md §5) as functions, so that
-- enroll, challenge and unenroll are one statement batch each and verify two (the factor's
-- secret must be read before the code is checked, on the shard). They run as
-- supabase_auth_admin, follow GoTrue's internal/api/mfa.go step for step, and answer refusals
-- with GoTrue's error codes: returned (not raised) where GoTrue commits something before it
-- refuses (the clean-up of abandoned factors, the removal of an expired challenge), raised with
-- SQLSTATE MBMF1 (message = the code) where nothing may stay. The mfa_verification_attempt
-- hook, when configured, is called by the handler's SQL with auth_mfa_hook_input's payload and
-- its answer read by auth_mfa_hook_outcome.

-- The `amr` method a factor type adds to a session.
create or replace function _madbase.auth_mfa_amr_method(p_type text)
returns text
language sql immutable
set search_path = ''
as $$
  select case p_type when 'totp' then 'totp' when 'phone' then 'mfa/phone' when 'webauthn' then 'mfa/webauthn' end
$$;

-- POST /factors (TOTP): GoTrue's clean-up of abandoned factors (unverified, never challenged,
-- older than 300 s; every user's, as GoTrue's DeleteExpiredFactors), its checks in its order
-- (friendly-name conflict, factor counts, AAL2 once a factor is verified), then the new
-- unverified factor and its audit row. Returns the refusal, or the account name of the
-- otpauth URI (the user's email, else phone). The user row is locked so that concurrent
-- enrollments cannot pass the count check together.
create or replace function _madbase.auth_mfa_enroll(
  p_user uuid, p_session uuid, p_factor uuid, p_friendly_name text, p_secret text,
  p_max_factors integer, p_ip text
) returns table (error text, account text)
language plpgsql volatile
set search_path = ''
as $$
declare
  v_account text;
  v_total integer;
  v_verified integer;
  v_conflict boolean;
  v_aal text;
begin
  delete from auth.mfa_factors f
  where f.status <> 'verified' and f.created_at + interval '300 seconds' < now()
    and not exists (select 1 from auth.mfa_challenges c where c.factor_id = f.id);

  select coalesce(nullif(u.email, ''), nullif(u.phone, '')) into v_account
  from auth.users u where u.id = p_user for update;

  select count(*), count(*) filter (where f.status = 'verified'),
         coalesce(bool_or(coalesce(f.friendly_name, '') = p_friendly_name), false)
    into v_total, v_verified, v_conflict
  from auth.mfa_factors f where f.user_id = p_user;
  if v_conflict then
    return query select 'mfa_factor_name_conflict'::text, null::text;
    return;
  end if;
  -- GoTrue's MaxVerifiedFactors is 10 and not configurable.
  if v_total >= p_max_factors or v_verified >= 10 then
    return query select 'too_many_enrolled_mfa_factors'::text, null::text;
    return;
  end if;
  select s.aal::text into v_aal from auth.sessions s where s.id = p_session;
  if v_verified > 0 and v_aal is distinct from 'aal2' then
    return query select 'insufficient_aal'::text, null::text;
    return;
  end if;
  if v_account is null then
    return query select 'no_account'::text, null::text;
    return;
  end if;

  insert into auth.mfa_factors (id, user_id, friendly_name, factor_type, status, created_at, updated_at, secret)
  values (p_factor, p_user, p_friendly_name, 'totp', 'unverified', now(), now(), p_secret);
  perform _madbase.auth_audit(p_user, 'factor_in_progress', p_ip, json_build_object('factor_id', p_factor));
  return query select null::text, v_account;
end
$$;

-- POST /factors/<id>/challenge: the user's factor (else mfa_factor_not_found), its type's
-- verification switch, then the challenge row with the client's address, the factor's
-- last_challenged_at and the audit row. Returns the refusal, or the factor type and the
-- challenge's expiry (created_at + 300 s, Unix seconds).
create or replace function _madbase.auth_mfa_challenge(
  p_user uuid, p_factor uuid, p_challenge uuid, p_ip text, p_totp_enabled boolean
) returns table (error text, factor_type text, expires_at bigint)
language plpgsql volatile
set search_path = ''
as $$
declare
  f auth.mfa_factors;
begin
  select * into f from auth.mfa_factors x where x.id = p_factor and x.user_id = p_user;
  if not found then
    return query select 'mfa_factor_not_found'::text, null::text, null::bigint;
    return;
  end if;
  -- Phone and WebAuthn factors are not served (reference/auth.md §5: off by default).
  if f.factor_type <> 'totp' or not p_totp_enabled then
    return query select 'mfa_' || f.factor_type || '_verify_not_enabled', f.factor_type::text, null::bigint;
    return;
  end if;
  insert into auth.mfa_challenges (id, factor_id, created_at, ip_address)
  values (p_challenge, f.id, now(), p_ip::inet);
  update auth.mfa_factors x set last_challenged_at = now(), updated_at = now() where x.id = f.id;
  perform _madbase.auth_audit(p_user, 'challenge_created', p_ip,
                              json_build_object('factor_id', f.id, 'factor_status', f.status));
  return query select null::text, f.factor_type::text,
                      floor(extract(epoch from now() + interval '300 seconds'))::bigint;
end
$$;

-- POST /factors/<id>/verify, first batch: the user's factor (else mfa_factor_not_found); with
-- p_proceed false (the request body was refused) nothing more. Then the type's verification
-- switch and GoTrue's validateChallenge: the challenge of this factor (else
-- mfa_challenge_not_found), unused and from the same address (else mfa_ip_address_mismatch),
-- unexpired (else it is deleted, and that commits: mfa_challenge_expired). Returns the refusal,
-- or the factor type and its secret.
create or replace function _madbase.auth_mfa_verify_check(
  p_user uuid, p_factor uuid, p_challenge uuid, p_ip text, p_proceed boolean, p_totp_enabled boolean
) returns table (error text, factor_type text, secret text)
language plpgsql volatile
set search_path = ''
as $$
declare
  f auth.mfa_factors;
  c auth.mfa_challenges;
begin
  select * into f from auth.mfa_factors x where x.id = p_factor and x.user_id = p_user;
  if not found then
    return query select 'mfa_factor_not_found'::text, null::text, null::text;
    return;
  end if;
  if not p_proceed then
    return query select null::text, f.factor_type::text, null::text;
    return;
  end if;
  if f.factor_type <> 'totp' or not p_totp_enabled then
    return query select 'mfa_' || f.factor_type || '_verify_not_enabled', f.factor_type::text, null::text;
    return;
  end if;
  select * into c from auth.mfa_challenges x where x.id = p_challenge and x.factor_id = f.id;
  if not found then
    return query select 'mfa_challenge_not_found'::text, f.factor_type::text, null::text;
    return;
  end if;
  if c.verified_at is not null or c.ip_address is distinct from p_ip::inet then
    return query select 'mfa_ip_address_mismatch'::text, f.factor_type::text, null::text;
    return;
  end if;
  if now() > c.created_at + interval '300 seconds' then
    delete from auth.mfa_challenges x where x.id = c.id;
    return query select 'mfa_challenge_expired'::text, f.factor_type::text, null::text;
    return;
  end if;
  return query select null::text, f.factor_type::text, f.secret;
end
$$;

-- The mfa_verification_attempt hook's answer for a verification (GoTrue's v0hooks): an
-- answer with an error aborts the batch as the hook asked (auth_hook_guard, MBHK1); a
-- "reject" decision signs the user out everywhere (that commits) and yields the message to
-- answer 403 mfa_verification_rejected with (GoTrue's default when the hook gives none); any
-- other answer yields null. A null answer (no hook) yields null.
create or replace function _madbase.auth_mfa_hook_outcome(p_user uuid, p_answer jsonb)
returns text
language plpgsql volatile
set search_path = ''
as $$
begin
  if p_answer is null then
    return null;
  end if;
  perform _madbase.auth_hook_guard(p_answer);
  if p_answer ->> 'decision' = 'reject' then
    delete from auth.sessions s where s.user_id = p_user;
    return coalesce(nullif(p_answer ->> 'message', ''), 'Further MFA verification attempts will be rejected.');
  end if;
  return null;
end
$$;

-- The mfa_verification_attempt hook's input (GoTrue's MFAVerificationAttemptInput).
create or replace function _madbase.auth_mfa_hook_input(p_user uuid, p_factor uuid, p_ip text, p_valid boolean)
returns jsonb
language sql volatile
set search_path = ''
as $$
  select jsonb_build_object(
    'metadata', jsonb_build_object('uuid', gen_random_uuid(), 'time', now(), 'name', 'mfa-verification',
                                   'ip_address', p_ip),
    'user_id', p_user, 'factor_id', p_factor, 'factor_type', f.factor_type, 'valid', p_valid)
  from (select 1) one left join auth.mfa_factors f on f.id = p_factor
$$;

-- POST /factors/<id>/verify, second batch (the code was right): GoTrue's verify transaction.
-- The challenge is marked verified only if it still is unused (so one challenge verifies once,
-- however many requests race), the factor becomes verified, the session gains the factor's
-- `amr` entry (or refreshes its time), its live refresh tokens are revoked and `p_refresh_token`
-- issued as the child of the oldest (GoTrue's legacy-token swap), the session becomes aal2 and
-- remembers the factor, the user's sessions below aal2 are deleted, and so are the user's other
-- unverified factors of the type. `p_rejected`: the mfa_verification_attempt hook's refusal
-- (auth_mfa_hook_outcome, evaluated as this call's argument, its sign-out committed): returned
-- at once. Refusals raise MBMF1 (nothing stays); a vanished session raises MBAU2
-- (session_not_found).
create or replace function _madbase.auth_mfa_verify_finish(
  p_user uuid, p_session uuid, p_factor uuid, p_challenge uuid, p_refresh_token text, p_ip text,
  p_rejected text
) returns text
language plpgsql volatile
set search_path = ''
as $$
declare
  f auth.mfa_factors;
  v_parent text;
begin
  if p_rejected is not null then
    return p_rejected;
  end if;
  select * into f from auth.mfa_factors x where x.id = p_factor and x.user_id = p_user for update;
  if not found then
    raise exception using errcode = 'MBMF1', message = 'mfa_factor_not_found';
  end if;
  update auth.mfa_challenges x set verified_at = now()
  where x.id = p_challenge and x.factor_id = f.id and x.verified_at is null;
  if not found then
    raise exception using errcode = 'MBMF1', message = 'mfa_ip_address_mismatch';
  end if;
  -- The session's tokens before the session: the refresh grant's lock order.
  perform 1 from auth.refresh_tokens r where r.session_id = p_session and not r.revoked for update;
  perform 1 from auth.sessions s where s.id = p_session and s.user_id = p_user for update;
  if not found then
    raise exception using errcode = 'MBAU2', message = 'Session from session_id claim in JWT does not exist';
  end if;

  perform _madbase.auth_audit(p_user, 'verification_attempted', p_ip,
                              json_build_object('factor_id', f.id, 'challenge_id', p_challenge,
                                                'factor_type', f.factor_type));
  if f.status <> 'verified' then
    update auth.mfa_factors x set status = 'verified', updated_at = now() where x.id = f.id;
  end if;
  insert into auth.mfa_amr_claims (id, session_id, created_at, updated_at, authentication_method)
  values (gen_random_uuid(), p_session, now(), now(), _madbase.auth_mfa_amr_method(f.factor_type::text))
  on conflict (session_id, authentication_method) do update set updated_at = now();

  select r.token into v_parent from auth.refresh_tokens r
  where r.session_id = p_session and not r.revoked order by r.created_at, r.id limit 1;
  update auth.refresh_tokens r set revoked = true, updated_at = now()
  where r.session_id = p_session and not r.revoked;
  insert into auth.refresh_tokens (instance_id, token, user_id, revoked, created_at, updated_at, parent, session_id)
  values ('00000000-0000-0000-0000-000000000000', p_refresh_token, p_user::text, false, now(), now(), v_parent, p_session);
  perform _madbase.auth_audit(p_user, 'token_revoked', p_ip, '{}'::json);

  update auth.sessions s set aal = 'aal2', factor_id = f.id, updated_at = now() where s.id = p_session;
  delete from auth.sessions s where s.user_id = p_user and s.aal < 'aal2';
  delete from auth.mfa_factors x
  where x.user_id = p_user and x.status = 'unverified' and x.factor_type = f.factor_type;
  return null;
end
$$;

-- DELETE /factors/<id>: the user's factor (else mfa_factor_not_found); a verified one only from
-- an aal2 session (else insufficient_aal); then the factor (its challenges cascade), the audit
-- row, and GoTrue's DowngradeSessionsToAAL1: the sessions that were raised with this factor
-- lose its `amr` entry and go back to aal1. Returns the refusal, or null.
create or replace function _madbase.auth_mfa_unenroll(p_user uuid, p_session uuid, p_factor uuid, p_ip text)
returns text
language plpgsql volatile
set search_path = ''
as $$
declare
  f auth.mfa_factors;
  v_aal text;
begin
  select * into f from auth.mfa_factors x where x.id = p_factor and x.user_id = p_user for update;
  if not found then
    return 'mfa_factor_not_found';
  end if;
  if p_session is null then
    return 'no_session';
  end if;
  select s.aal::text into v_aal from auth.sessions s where s.id = p_session;
  if f.status = 'verified' and v_aal is distinct from 'aal2' then
    return 'insufficient_aal';
  end if;
  delete from auth.mfa_factors x where x.id = f.id;
  perform _madbase.auth_audit(p_user, 'factor_unenrolled', p_ip,
                              json_build_object('factor_id', f.id, 'factor_status', f.status, 'session_id', p_session));
  delete from auth.mfa_amr_claims c using auth.sessions s
  where s.factor_id = f.id and c.session_id = s.id
    and c.authentication_method = _madbase.auth_mfa_amr_method(f.factor_type::text);
  update auth.sessions s set aal = 'aal1', factor_id = null where s.user_id = p_user and s.factor_id = f.id;
  return null;
end
$$;

revoke all on function _madbase.auth_mfa_amr_method(text) from public;
revoke all on function _madbase.auth_mfa_enroll(uuid, uuid, uuid, text, text, integer, text) from public;
revoke all on function _madbase.auth_mfa_challenge(uuid, uuid, uuid, text, boolean) from public;
revoke all on function _madbase.auth_mfa_verify_check(uuid, uuid, uuid, text, boolean, boolean) from public;
revoke all on function _madbase.auth_mfa_verify_finish(uuid, uuid, uuid, uuid, text, text, text) from public;
revoke all on function _madbase.auth_mfa_unenroll(uuid, uuid, uuid, text) from public;
revoke all on function _madbase.auth_mfa_hook_outcome(uuid, jsonb) from public;
revoke all on function _madbase.auth_mfa_hook_input(uuid, uuid, text, boolean) from public;
grant execute on function _madbase.auth_mfa_amr_method(text) to supabase_auth_admin;
grant execute on function _madbase.auth_mfa_enroll(uuid, uuid, uuid, text, text, integer, text) to supabase_auth_admin;
grant execute on function _madbase.auth_mfa_challenge(uuid, uuid, uuid, text, boolean) to supabase_auth_admin;
grant execute on function _madbase.auth_mfa_verify_check(uuid, uuid, uuid, text, boolean, boolean) to supabase_auth_admin;
grant execute on function _madbase.auth_mfa_verify_finish(uuid, uuid, uuid, uuid, text, text, text) to supabase_auth_admin;
grant execute on function _madbase.auth_mfa_unenroll(uuid, uuid, uuid, text) to supabase_auth_admin;
grant execute on function _madbase.auth_mfa_hook_outcome(uuid, jsonb) to supabase_auth_admin;
grant execute on function _madbase.auth_mfa_hook_input(uuid, uuid, text, boolean) to supabase_auth_admin;
