-- MadBase Auth: the email and phone flows (auth/src/flows) as functions, so that each flow's
-- database side is one statement batch: issuing a one-time token (GoTrue's send* functions),
-- verifying and consuming one (GoTrue's verify.go), the PKCE exchange and PUT /user's writes.
-- They run as supabase_auth_admin. Refusals raise SQLSTATE MBFL0 with the GoTrue error code as
-- the message, the HTTP status as the detail and GoTrue's message as the hint, so a refused
-- request commits nothing.
--
-- Token hashes are GoTrue's: hex(sha224(address || otp)), `pkce_`-prefixed in a PKCE flow. They
-- are computed here from the one-time code so that the address is the one stored on the user.
-- Tokens are compared through their SHA-256 digests, so the time a comparison takes says nothing
-- about how much of a guess was right.

create or replace function _madbase.auth_flow_fail(p_code text, p_status integer, p_message text)
returns void
language plpgsql volatile
set search_path = ''
as $$
begin
  raise exception using errcode = 'MBFL0', message = p_code, detail = p_status::text, hint = p_message;
end
$$;

-- GoTrue's token hash of a code sent to `p_address`.
create or replace function _madbase.auth_token_hash(p_address text, p_otp text)
returns text
language sql immutable
set search_path = ''
as $$
  select encode(sha224(convert_to(coalesce(p_address, '') || p_otp, 'UTF8')), 'hex')
$$;

-- Whether `p_given` is the stored token `p_stored` (or its `pkce_` form), compared as digests.
create or replace function _madbase.auth_token_eq(p_given text, p_stored text)
returns boolean
language sql immutable
set search_path = ''
as $$
  select coalesce(p_stored, '') <> '' and coalesce(p_given, '') <> ''
     and (sha256(convert_to(p_given, 'UTF8')) = sha256(convert_to(p_stored, 'UTF8'))
          or sha256(convert_to('pkce_' || p_given, 'UTF8')) = sha256(convert_to(p_stored, 'UTF8')))
$$;

-- Stores one token: the user's column and its `*_sent_at`, and the one_time_tokens row of its
-- type (one per user and type, as GoTrue's CreateOneTimeToken).
create or replace function _madbase.auth_put_token(p_user uuid, p_type text, p_hash text, p_relates_to text)
returns void
language plpgsql volatile
set search_path = ''
as $$
begin
  case p_type
    when 'confirmation_token' then
      update auth.users set confirmation_token = p_hash, confirmation_sent_at = now() where id = p_user;
    when 'recovery_token' then
      update auth.users set recovery_token = p_hash, recovery_sent_at = now() where id = p_user;
    when 'reauthentication_token' then
      update auth.users set reauthentication_token = p_hash, reauthentication_sent_at = now() where id = p_user;
    when 'phone_change_token' then
      update auth.users set phone_change_token = p_hash, phone_change_sent_at = now() where id = p_user;
    when 'email_change_token_new' then
      update auth.users set email_change_token_new = p_hash, email_change_sent_at = now() where id = p_user;
    when 'email_change_token_current' then
      update auth.users set email_change_token_current = p_hash, email_change_sent_at = now() where id = p_user;
  end case;
  delete from auth.one_time_tokens t where t.user_id = p_user and t.token_type = p_type::auth.one_time_token_type;
  insert into auth.one_time_tokens (id, user_id, token_type, token_hash, relates_to, created_at, updated_at)
  values (gen_random_uuid(), p_user, p_type::auth.one_time_token_type, p_hash, lower(coalesce(p_relates_to, '')), now(), now());
end
$$;

-- Issues a one-time token to an existing user (GoTrue's sendConfirmation, sendInvite,
-- sendMagicLink, sendPasswordRecovery, sendReauthenticationOtp, sendEmailChange,
-- sendPhoneConfirmation). `p`:
--   user_id | email | phone   which user (email: lower-cased; not SSO users)
--   kind                      confirmation, phone_confirmation, invite, magiclink, recovery,
--                             reauthentication, email_change, phone_change, and
--                             email_change_current / email_change_new (generate_link: one token)
--   require                   any (default), confirmed, unconfirmed, phone_unconfirmed,
--                             email_change, phone_change: else the answer is `skipped`;
--                             reauthenticate: GoTrue's refusals of /reauthenticate
--   otp, otp_current          the code(s) sent (email_change: otp to the new address,
--                             otp_current to the current one when double_confirm_changes)
--   new_address               email_change, phone_change: the address changed to (default:
--                             the pending one, for /resend)
--   pkce                      prefix the token with `pkce_`; flow: the flow_state row to make
--   secure_email_change, max_frequency (seconds), sms (the frequency error is the SMS one),
--   audit                     the audit action, if any
-- Answers {status: sent|not_found|skipped, user_id, email, phone, new_address, token_hash,
-- token_hash_current, confirmed, phone_confirmed, user}.
create or replace function _madbase.auth_send(p jsonb)
returns jsonb
language plpgsql volatile
set search_path = ''
as $$
declare
  u auth.users;
  v_kind text := p ->> 'kind';
  v_prefix text := case when coalesce((p ->> 'pkce')::boolean, false) then 'pkce_' else '' end;
  v_sent timestamptz;
  v_freq interval := make_interval(secs => coalesce((p ->> 'max_frequency')::float8, 0));
  v_addr text;
  v_new text;
  v_hash text;
  v_hash_current text := '';
  v_flow jsonb := p -> 'flow';
begin
  if p ? 'user_id' then
    select * into u from auth.users x where x.id = (p ->> 'user_id')::uuid for update;
  elsif p ? 'email' then
    select * into u from auth.users x
    where lower(x.email) = lower(p ->> 'email') and x.aud = 'authenticated' and not x.is_sso_user
    limit 1 for update;
  else
    select * into u from auth.users x
    where x.phone = p ->> 'phone' and x.aud = 'authenticated' and not x.is_sso_user
    limit 1 for update;
  end if;
  if not found then
    return jsonb_build_object('status', 'not_found');
  end if;
  if (p ->> 'require' = 'confirmed' and u.email_confirmed_at is null)
     or (p ->> 'require' = 'unconfirmed' and u.email_confirmed_at is not null)
     or (p ->> 'require' = 'phone_unconfirmed' and u.phone_confirmed_at is not null)
     or (p ->> 'require' = 'email_change' and coalesce(u.email_change, '') = '')
     or (p ->> 'require' = 'phone_change' and coalesce(u.phone_change, '') = '') then
    return jsonb_build_object('status', 'skipped', 'user_id', u.id, 'email', coalesce(u.email, ''),
                              'phone', coalesce(u.phone, ''), 'confirmed', u.email_confirmed_at is not null,
                              'now', to_char(now() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'));
  end if;
  if p ->> 'require' = 'reauthenticate' then
    if coalesce(u.email, '') = '' and coalesce(u.phone, '') = '' then
      perform _madbase.auth_flow_fail('validation_failed', 400,
        'Reauthentication requires the user to have an email or a phone number');
    elsif coalesce(u.email, '') <> '' and u.email_confirmed_at is null then
      perform _madbase.auth_flow_fail('email_not_confirmed', 422, 'Please verify your email first.');
    elsif coalesce(u.email, '') = '' and u.phone_confirmed_at is null then
      perform _madbase.auth_flow_fail('phone_not_confirmed', 422, 'Please verify your phone first.');
    end if;
    if coalesce(u.email, '') = '' then
      v_freq := make_interval(secs => coalesce((p ->> 'sms_max_frequency')::float8, 0));
      p := p || '{"sms": true}'::jsonb;
    end if;
  end if;
  v_sent := case v_kind
    when 'confirmation' then u.confirmation_sent_at
    when 'phone_confirmation' then u.confirmation_sent_at
    when 'magiclink' then u.recovery_sent_at
    when 'recovery' then u.recovery_sent_at
    when 'reauthentication' then u.reauthentication_sent_at
    when 'email_change' then u.email_change_sent_at
    when 'phone_change' then u.phone_change_sent_at
    else null end;
  if v_sent is not null and v_sent + v_freq > now() then
    perform _madbase.auth_flow_fail(
      case when coalesce((p ->> 'sms')::boolean, false) then 'over_sms_send_rate_limit' else 'over_email_send_rate_limit' end,
      429,
      format('For security purposes, you can only request this after %s seconds.',
             floor(extract(epoch from (v_sent + v_freq - now())))::bigint));
  end if;
  if v_flow is not null then
    insert into auth.flow_state (id, user_id, auth_code, code_challenge_method, code_challenge, provider_type,
                                 authentication_method, created_at, updated_at)
    values (gen_random_uuid(), u.id, v_flow ->> 'auth_code', (v_flow ->> 'method')::auth.code_challenge_method,
            v_flow ->> 'challenge', v_flow ->> 'provider_type', v_flow ->> 'authentication_method', now(), now());
  end if;
  case v_kind
    when 'confirmation', 'invite' then
      v_addr := coalesce(u.email, '');
      v_hash := v_prefix || _madbase.auth_token_hash(v_addr, p ->> 'otp');
      perform _madbase.auth_put_token(u.id, 'confirmation_token', v_hash, v_addr);
      if v_kind = 'invite' then
        update auth.users set invited_at = now() where id = u.id;
      end if;
    when 'phone_confirmation' then
      v_addr := coalesce(u.phone, '');
      v_hash := _madbase.auth_token_hash(v_addr, p ->> 'otp');
      perform _madbase.auth_put_token(u.id, 'confirmation_token', v_hash, v_addr);
    when 'magiclink', 'recovery' then
      v_addr := coalesce(u.email, '');
      v_hash := v_prefix || _madbase.auth_token_hash(v_addr, p ->> 'otp');
      perform _madbase.auth_put_token(u.id, 'recovery_token', v_hash, v_addr);
    when 'reauthentication' then
      v_addr := coalesce(nullif(u.email, ''), u.phone, '');
      v_hash := _madbase.auth_token_hash(v_addr, p ->> 'otp');
      perform _madbase.auth_put_token(u.id, 'reauthentication_token', v_hash, v_addr);
    when 'email_change' then
      v_new := lower(coalesce(p ->> 'new_address', u.email_change, ''));
      v_addr := coalesce(u.email, '');
      v_hash := v_prefix || _madbase.auth_token_hash(v_new, p ->> 'otp');
      update auth.users set email_change = v_new, email_change_confirm_status = 0, email_change_token_current = ''
      where id = u.id;
      perform _madbase.auth_put_token(u.id, 'email_change_token_new', v_hash, v_new);
      if coalesce((p ->> 'secure_email_change')::boolean, true) and v_addr <> '' then
        v_hash_current := v_prefix || _madbase.auth_token_hash(v_addr, p ->> 'otp_current');
        perform _madbase.auth_put_token(u.id, 'email_change_token_current', v_hash_current, v_addr);
      else
        delete from auth.one_time_tokens t where t.user_id = u.id and t.token_type = 'email_change_token_current';
      end if;
    when 'email_change_current', 'email_change_new' then
      v_new := lower(coalesce(p ->> 'new_address', ''));
      v_addr := coalesce(u.email, '');
      update auth.users set email_change = v_new, email_change_confirm_status = 0 where id = u.id;
      if v_kind = 'email_change_current' then
        v_hash := _madbase.auth_token_hash(v_addr, p ->> 'otp');
        perform _madbase.auth_put_token(u.id, 'email_change_token_current', v_hash, v_addr);
      else
        v_hash := _madbase.auth_token_hash(v_new, p ->> 'otp');
        perform _madbase.auth_put_token(u.id, 'email_change_token_new', v_hash, v_new);
      end if;
    when 'phone_change' then
      v_new := coalesce(p ->> 'new_address', u.phone_change, '');
      v_addr := coalesce(u.phone, '');
      v_hash := _madbase.auth_token_hash(v_new, p ->> 'otp');
      update auth.users set phone_change = v_new where id = u.id;
      perform _madbase.auth_put_token(u.id, 'phone_change_token', v_hash, v_new);
    else
      raise exception 'auth_send: unknown kind %', v_kind;
  end case;
  if p ? 'audit' then
    perform _madbase.auth_audit(u.id, p ->> 'audit', coalesce(p ->> 'ip', ''), '{}'::json);
  end if;
  return jsonb_build_object(
    'status', 'sent', 'user_id', u.id, 'email', coalesce(u.email, ''), 'phone', coalesce(u.phone, ''),
    'new_address', coalesce(v_new, ''), 'token_hash', v_hash, 'token_hash_current', v_hash_current,
    'confirmed', u.email_confirmed_at is not null, 'phone_confirmed', u.phone_confirmed_at is not null,
    'user', (select _madbase.auth_user_json(x)::jsonb from auth.users x where x.id = u.id));
end
$$;

-- Rewrites app_metadata.provider(s) from the user's identities (GoTrue's UpdateAppMetaDataProviders).
create or replace function _madbase.auth_sync_providers(p_user uuid)
returns void
language sql volatile
set search_path = ''
as $$
  update auth.users u set raw_app_meta_data = coalesce(u.raw_app_meta_data, '{}'::jsonb)
    || jsonb_build_object('providers', coalesce(p.providers, '[]'::jsonb))
    || case when p.providers is null then '{}'::jsonb else jsonb_build_object('provider', p.providers -> 0) end
  from (select jsonb_agg(provider order by first) as providers
        from (select i.provider, min(i.created_at) as first from auth.identities i where i.user_id = p_user
              group by i.provider) d) p
  where u.id = p_user
$$;

-- Confirms the user's email (GoTrue's User.Confirm): the timestamp, `email_verified` in the user
-- metadata and on the email identity of that address, and no one-time token left.
create or replace function _madbase.auth_confirm_email(p_user uuid)
returns void
language plpgsql volatile
set search_path = ''
as $$
begin
  update auth.users set confirmation_token = '', email_confirmed_at = now(), updated_at = now(),
         raw_user_meta_data = coalesce(raw_user_meta_data, '{}'::jsonb) || '{"email_verified": true}'::jsonb
  where id = p_user;
  update auth.identities i set identity_data = i.identity_data || '{"email_verified": true}'::jsonb, updated_at = now()
  from auth.users u
  where u.id = p_user and i.user_id = u.id and coalesce(u.email, '') <> ''
    and lower(i.identity_data ->> 'email') = lower(u.email);
  delete from auth.one_time_tokens t where t.user_id = p_user;
end
$$;

-- The verification method of a verify type, as flow_state.authentication_method stores it.
create or replace function _madbase.auth_verify_method(p_type text)
returns text
language sql immutable
set search_path = ''
as $$
  select case when p_type like '%signup' then 'email/signup' else p_type end
$$;

-- POST and GET /verify (GoTrue's verify.go). `p`:
--   type, token_hash                       the type and the hash (with the link: as sent; with a
--                                          code: hex(sha224(address || code)))
--   email | phone                          set when a code was given (not with a token hash)
--   test_otp                               the code is the phone's configured test OTP
--   email_exp, sms_exp (seconds), secure_email_change, mailer_autoconfirm
--   pkce                                   GET of a `pkce_` link: issue the flow's auth code
--   session {id, refresh_token, ip, user_agent}   the session to start
-- Answers {user_id, type, first_leg, auth_code}; refusals raise MBFL0.
create or replace function _madbase.auth_verify(p jsonb)
returns jsonb
language plpgsql volatile
set search_path = ''
as $$
declare
  u auth.users;
  v_type text := p ->> 'type';
  v_hash text := p ->> 'token_hash';
  v_by_hash boolean := not (p ? 'email' or p ? 'phone');
  v_email_exp interval := make_interval(secs => (p ->> 'email_exp')::float8);
  v_sms_exp interval := make_interval(secs => (p ->> 'sms_exp')::float8);
  v_user uuid;
  v_valid boolean := false;
  v_sent timestamptz;
  v_provider text := 'email';
  v_code text;
  v_session jsonb := p -> 'session';
  v_link_error constant text := 'Email link is invalid or has expired';
  v_otp_error constant text := 'Token has expired or is invalid';
begin
  if v_by_hash then
    select t.user_id into v_user from auth.one_time_tokens t
    where t.token_hash = v_hash and t.token_type = any (case v_type
      when 'email' then array['confirmation_token', 'recovery_token']
      when 'signup' then array['confirmation_token']
      when 'invite' then array['confirmation_token']
      when 'recovery' then array['recovery_token']
      when 'magiclink' then array['recovery_token']
      when 'email_change' then array['email_change_token_current', 'email_change_token_new']
      end::auth.one_time_token_type[])
    order by t.created_at desc limit 1;
    if v_type not in ('email', 'signup', 'invite', 'recovery', 'magiclink', 'email_change') then
      perform _madbase.auth_flow_fail('validation_failed', 400, 'Invalid email verification type');
    end if;
    if v_user is null then
      perform _madbase.auth_flow_fail('otp_expired', 403, v_link_error);
    end if;
    select * into u from auth.users x where x.id = v_user for update;
    if not found then
      perform _madbase.auth_flow_fail('otp_expired', 403, v_link_error);
    end if;
    if u.banned_until is not null and u.banned_until > now() then
      perform _madbase.auth_flow_fail('user_banned', 403, 'User is banned');
    end if;
    if v_type = 'email' then
      v_type := 'signup';
      v_sent := u.confirmation_sent_at;
      if u.recovery_token = v_hash then
        v_type := 'magiclink';
        v_sent := u.recovery_sent_at;
      end if;
    else
      v_sent := case v_type
        when 'signup' then u.confirmation_sent_at when 'invite' then u.confirmation_sent_at
        when 'recovery' then u.recovery_sent_at when 'magiclink' then u.recovery_sent_at
        else u.email_change_sent_at end;
    end if;
    if v_sent is null or v_sent + v_email_exp < now() then
      perform _madbase.auth_flow_fail('otp_expired', 403, v_link_error);
    end if;
  else
    if v_type = 'phone_change' then
      select * into u from auth.users x where x.phone_change = p ->> 'phone' and x.aud = 'authenticated'
        and not x.is_sso_user limit 1 for update;
    elsif v_type = 'sms' then
      select * into u from auth.users x where x.phone = p ->> 'phone' and x.aud = 'authenticated'
        and not x.is_sso_user limit 1 for update;
    elsif v_type = 'email_change' then
      select * into u from auth.users x where x.id = (
        select t.user_id from auth.one_time_tokens t
        where t.token_hash in (v_hash, 'pkce_' || v_hash)
          and ((coalesce((p ->> 'secure_email_change')::boolean, true) and t.token_type = 'email_change_token_current')
               or t.token_type = 'email_change_token_new')
        order by (t.token_type = 'email_change_token_current') desc limit 1)
      for update;
    else
      select * into u from auth.users x where lower(x.email) = lower(p ->> 'email') and x.aud = 'authenticated'
        and not x.is_sso_user limit 1 for update;
    end if;
    if not found then
      perform _madbase.auth_flow_fail('otp_expired', 403, v_otp_error);
    end if;
    if u.banned_until is not null and u.banned_until > now() then
      perform _madbase.auth_flow_fail('user_banned', 403, 'User is banned');
    end if;
    case v_type
      when 'email' then
        if _madbase.auth_token_eq(v_hash, u.confirmation_token) and u.confirmation_sent_at + v_email_exp >= now() then
          v_valid := true;
          v_type := 'signup';
        elsif _madbase.auth_token_eq(v_hash, u.recovery_token) and u.recovery_sent_at + v_email_exp >= now() then
          v_valid := true;
          v_type := 'magiclink';
        end if;
      when 'signup', 'invite' then
        v_valid := _madbase.auth_token_eq(v_hash, u.confirmation_token) and u.confirmation_sent_at + v_email_exp >= now();
      when 'recovery', 'magiclink' then
        v_valid := _madbase.auth_token_eq(v_hash, u.recovery_token) and u.recovery_sent_at + v_email_exp >= now();
      when 'email_change' then
        v_valid := (_madbase.auth_token_eq(v_hash, u.email_change_token_current)
                    or _madbase.auth_token_eq(v_hash, u.email_change_token_new))
                   and u.email_change_sent_at + v_email_exp >= now();
      when 'sms' then
        v_valid := coalesce((p ->> 'test_otp')::boolean, false)
                   or (_madbase.auth_token_eq(v_hash, u.confirmation_token) and u.confirmation_sent_at + v_sms_exp >= now());
      when 'phone_change' then
        v_valid := coalesce((p ->> 'test_otp')::boolean, false)
                   or (_madbase.auth_token_eq(v_hash, u.phone_change_token) and u.phone_change_sent_at + v_sms_exp >= now());
      else
        v_valid := false;
    end case;
    if not coalesce(v_valid, false) then
      perform _madbase.auth_flow_fail('otp_expired', 403, v_otp_error);
    end if;
  end if;

  case v_type
    when 'signup', 'invite' then
      perform _madbase.auth_audit(u.id, 'user_signedup', coalesce(v_session ->> 'ip', ''), '{"provider": "email"}'::json);
      perform _madbase.auth_confirm_email(u.id);
    when 'recovery', 'magiclink' then
      update auth.users set recovery_token = '' where id = u.id;
      delete from auth.one_time_tokens t where t.user_id = u.id;
      if u.email_confirmed_at is null then
        perform _madbase.auth_audit(u.id, 'user_signedup', coalesce(v_session ->> 'ip', ''), '{"provider": "email"}'::json);
        perform _madbase.auth_confirm_email(u.id);
      end if;
    when 'email_change' then
      if not coalesce((p ->> 'mailer_autoconfirm')::boolean, false)
         and coalesce((p ->> 'secure_email_change')::boolean, true)
         and coalesce(u.email_change_confirm_status, 0) = 0 and coalesce(u.email, '') <> '' then
        if _madbase.auth_token_eq(v_hash, u.email_change_token_current) then
          update auth.users set email_change_confirm_status = 1, email_change_token_current = '' where id = u.id;
          delete from auth.one_time_tokens t where t.user_id = u.id and t.token_type = 'email_change_token_current';
        else
          update auth.users set email_change_confirm_status = 1, email_change_token_new = '' where id = u.id;
          delete from auth.one_time_tokens t where t.user_id = u.id and t.token_type = 'email_change_token_new';
        end if;
        return jsonb_build_object('user_id', u.id, 'type', v_type, 'first_leg', true);
      end if;
      perform _madbase.auth_change_email(u.id);
    when 'sms' then
      v_provider := 'phone';
      perform _madbase.auth_audit(u.id, 'user_signedup', coalesce(v_session ->> 'ip', ''), '{"provider": "phone"}'::json);
      update auth.users set confirmation_token = '', phone_confirmed_at = now(), is_anonymous = false where id = u.id;
      delete from auth.one_time_tokens t where t.user_id = u.id;
    when 'phone_change' then
      v_provider := 'phone';
      perform _madbase.auth_change_phone(u.id);
    else
      perform _madbase.auth_flow_fail('validation_failed', 400, 'Unsupported verification type');
  end case;
  perform _madbase.auth_sync_providers(u.id);

  if coalesce((p ->> 'pkce')::boolean, false) then
    update auth.flow_state f set auth_code_issued_at = now(), updated_at = now()
    where f.id = (select g.id from auth.flow_state g
                  where g.user_id = u.id and g.authentication_method = _madbase.auth_verify_method(v_type)
                  order by g.created_at desc limit 1)
      and f.code_challenge is not null and f.code_challenge <> ''
    returning f.auth_code into v_code;
    if v_code is null then
      perform _madbase.auth_flow_fail('flow_state_not_found', 400,
        'No associated flow state found. No valid flow state found for user.');
    end if;
  elsif v_session is not null then
    perform _madbase.auth_start_session(u.id, (v_session ->> 'id')::uuid, v_session ->> 'refresh_token', 'otp', 'aal1',
      null, coalesce(v_session ->> 'ip', ''), v_session ->> 'user_agent', null, v_provider);
  end if;
  return jsonb_build_object('user_id', u.id, 'type', v_type, 'first_leg', false, 'auth_code', v_code);
end
$$;

-- Completes an email change (GoTrue's emailChangeVerify, second leg, and ConfirmEmailChange): the
-- email identity follows (or is created), the user is no longer anonymous, and the address is
-- confirmed.
create or replace function _madbase.auth_change_email(p_user uuid)
returns void
language plpgsql volatile
set search_path = ''
as $$
declare
  v_new text;
  v_confirmed boolean;
begin
  select u.email_change, u.email_confirmed_at is not null into v_new, v_confirmed from auth.users u where u.id = p_user;
  perform _madbase.auth_audit(p_user, 'user_modified', '', '{}'::json);
  if exists (select 1 from auth.identities i where i.user_id = p_user and i.provider = 'email') then
    update auth.identities i
    set identity_data = i.identity_data || jsonb_build_object('email', v_new, 'email_verified', true), updated_at = now()
    where i.user_id = p_user and i.provider = 'email';
  else
    insert into auth.identities (id, provider_id, user_id, identity_data, provider, last_sign_in_at, created_at, updated_at)
    values (gen_random_uuid(), p_user::text, p_user,
            jsonb_build_object('sub', p_user::text, 'email', v_new, 'email_verified', true, 'phone_verified', false),
            'email', now(), now(), now());
  end if;
  update auth.users set email = v_new, email_change = '', email_change_token_current = '', email_change_token_new = '',
         email_change_confirm_status = 0, is_anonymous = false, updated_at = now()
  where id = p_user;
  delete from auth.one_time_tokens t where t.user_id = p_user;
  if not v_confirmed then
    perform _madbase.auth_confirm_email(p_user);
  end if;
end
$$;

-- Completes a phone change (GoTrue's smsVerify for phone_change and ConfirmPhoneChange).
create or replace function _madbase.auth_change_phone(p_user uuid)
returns void
language plpgsql volatile
set search_path = ''
as $$
declare
  v_new text;
begin
  select u.phone_change into v_new from auth.users u where u.id = p_user;
  perform _madbase.auth_audit(p_user, 'user_modified', '', '{}'::json);
  if exists (select 1 from auth.identities i where i.user_id = p_user and i.provider = 'phone') then
    update auth.identities i
    set identity_data = i.identity_data || jsonb_build_object('phone', v_new, 'phone_verified', true), updated_at = now()
    where i.user_id = p_user and i.provider = 'phone';
  else
    insert into auth.identities (id, provider_id, user_id, identity_data, provider, last_sign_in_at, created_at, updated_at)
    values (gen_random_uuid(), p_user::text, p_user,
            jsonb_build_object('sub', p_user::text, 'phone', v_new, 'email_verified', false, 'phone_verified', true),
            'phone', now(), now(), now());
  end if;
  update auth.users set phone = v_new, phone_change = '', phone_change_token = '', phone_confirmed_at = now(),
         is_anonymous = false, updated_at = now()
  where id = p_user;
  delete from auth.one_time_tokens t where t.user_id = p_user;
end
$$;

-- POST /token?grant_type=pkce (GoTrue's PKCE): the flow state of `p_code` must exist, belong to a
-- user, be younger than `p_expiry` (a magic link's: since its code was issued) and match the
-- verifier; it is consumed and the session started. Answers the amr method.
create or replace function _madbase.auth_pkce_exchange(
  p_code text, p_verifier text, p_expiry interval, p_session uuid, p_refresh_token text, p_ip text, p_user_agent text
) returns text
language plpgsql volatile
set search_path = ''
as $$
declare
  f auth.flow_state;
  v_expected text;
begin
  select * into f from auth.flow_state x where x.auth_code = p_code limit 1 for update;
  if not found or f.user_id is null then
    perform _madbase.auth_flow_fail('flow_state_not_found', 404, 'invalid flow state, no valid flow state found');
  end if;
  if (f.auth_code_issued_at is not null and f.authentication_method = 'magiclink' and f.auth_code_issued_at + p_expiry < now())
     or ((f.auth_code_issued_at is null or f.authentication_method <> 'magiclink') and f.created_at + p_expiry < now()) then
    perform _madbase.auth_flow_fail('flow_state_expired', 422, 'invalid flow state, flow state has expired');
  end if;
  if coalesce(f.code_challenge, '') = '' then
    perform _madbase.auth_flow_fail('bad_code_verifier', 400, 'PKCE verification not applicable for implicit flow');
  end if;
  v_expected := case f.code_challenge_method::text
    when 'plain' then p_verifier
    else translate(rtrim(encode(sha256(convert_to(p_verifier, 'UTF8')), 'base64'), '='), '+/', '-_') end;
  if sha256(convert_to(v_expected, 'UTF8')) <> sha256(convert_to(f.code_challenge, 'UTF8')) then
    perform _madbase.auth_flow_fail('bad_code_verifier', 400, 'code challenge does not match previously saved code verifier');
  end if;
  delete from auth.flow_state x where x.id = f.id;
  perform _madbase.auth_start_session(f.user_id, p_session, p_refresh_token, f.authentication_method, 'aal1', null,
    p_ip, p_user_agent, null, null);
  return f.authentication_method;
end
$$;

-- `upd`'s keys merged into `old`; a null value removes its key (GoTrue's UpdateUserMetaData).
create or replace function _madbase.auth_meta_merge(old jsonb, upd jsonb)
returns jsonb
language sql immutable
set search_path = ''
as $$
  select (coalesce(old, '{}'::jsonb)
          || coalesce((select jsonb_object_agg(e.key, e.value) from jsonb_each(upd) e where jsonb_typeof(e.value) <> 'null'),
                      '{}'::jsonb))
         - coalesce((select array_agg(e.key) from jsonb_each(upd) e where jsonb_typeof(e.value) = 'null'), '{}'::text[])
$$;

-- A new password (GoTrue's User.UpdatePassword): every pending token is void and every other
-- session of the user is signed out (all of them when the caller's token names none).
create or replace function _madbase.auth_set_password(p_user uuid, p_session uuid, p_hash text, p_ip text)
returns void
language plpgsql volatile
set search_path = ''
as $$
begin
  update auth.users set encrypted_password = p_hash, confirmation_token = '', confirmation_sent_at = null,
         recovery_token = '', recovery_sent_at = null, email_change_token_current = '', email_change_token_new = '',
         email_change_sent_at = null, phone_change_token = '', phone_change_sent_at = null,
         reauthentication_token = '', reauthentication_sent_at = null, updated_at = now()
  where id = p_user;
  delete from auth.one_time_tokens t where t.user_id = p_user;
  delete from auth.sessions s where s.user_id = p_user and (p_session is null or s.id <> p_session);
  perform _madbase.auth_audit(p_user, 'user_updated_password', coalesce(p_ip, ''), '{}'::json);
end
$$;

-- What PUT /user decides on before it writes: the password hash, addresses, whether a verified
-- factor exists, the session's age, the reauthentication nonce, and whether the requested email
-- or phone belongs to another user.
create or replace function _madbase.auth_user_state(p_user uuid, p_session uuid, p_email text, p_phone text)
returns table (encrypted_password text, email text, phone text, is_anonymous boolean, has_factor boolean,
               session_age_s double precision, reauthentication_token text, reauthentication_valid_s double precision,
               email_taken boolean, phone_taken boolean, email_confirmed boolean)
language sql stable
set search_path = ''
as $$
  select coalesce(u.encrypted_password, ''), coalesce(u.email, ''), coalesce(u.phone, ''), coalesce(u.is_anonymous, false),
         exists (select 1 from auth.mfa_factors f where f.user_id = u.id and f.status::text = 'verified'),
         (select extract(epoch from now() - s.created_at)::float8 from auth.sessions s where s.id = p_session),
         coalesce(u.reauthentication_token, ''),
         extract(epoch from now() - u.reauthentication_sent_at)::float8,
         p_email is not null and (exists (select 1 from auth.users x where lower(x.email) = lower(p_email)
                                           and x.id <> u.id and x.aud = u.aud and not x.is_sso_user)
                                  or exists (select 1 from auth.identities i where lower(i.email) = lower(p_email)
                                             and i.user_id <> u.id)),
         p_phone is not null and exists (select 1 from auth.users x where x.phone = p_phone and x.id <> u.id
                                         and x.aud = u.aud and not x.is_sso_user),
         u.email_confirmed_at is not null
  from auth.users u where u.id = p_user
$$;

-- Consumes a reauthentication nonce (GoTrue's ConfirmReauthentication).
create or replace function _madbase.auth_use_nonce(p_user uuid)
returns void
language sql volatile
set search_path = ''
as $$
  update auth.users set reauthentication_token = '' where id = p_user;
  delete from auth.one_time_tokens t where t.user_id = p_user;
$$;

-- Clears a token's sent time after its message could not be sent, so /resend is not held back by
-- max_frequency for a message that never left.
create or replace function _madbase.auth_unsend(p_user uuid, p_kind text)
returns void
language sql volatile
set search_path = ''
as $$
  update auth.users set
    confirmation_sent_at = case when p_kind in ('confirmation', 'phone_confirmation', 'invite') then null else confirmation_sent_at end,
    recovery_sent_at = case when p_kind in ('magiclink', 'recovery') then null else recovery_sent_at end,
    reauthentication_sent_at = case when p_kind = 'reauthentication' then null else reauthentication_sent_at end,
    email_change_sent_at = case when p_kind = 'email_change' then null else email_change_sent_at end,
    phone_change_sent_at = case when p_kind = 'phone_change' then null else phone_change_sent_at end
  where id = p_user
$$;

do $$
declare
  f text;
begin
  foreach f in array array[
    '_madbase.auth_flow_fail(text, integer, text)',
    '_madbase.auth_token_hash(text, text)',
    '_madbase.auth_token_eq(text, text)',
    '_madbase.auth_put_token(uuid, text, text, text)',
    '_madbase.auth_send(jsonb)',
    '_madbase.auth_sync_providers(uuid)',
    '_madbase.auth_confirm_email(uuid)',
    '_madbase.auth_verify_method(text)',
    '_madbase.auth_verify(jsonb)',
    '_madbase.auth_change_email(uuid)',
    '_madbase.auth_change_phone(uuid)',
    '_madbase.auth_pkce_exchange(text, text, interval, uuid, text, text, text)',
    '_madbase.auth_meta_merge(jsonb, jsonb)',
    '_madbase.auth_set_password(uuid, uuid, text, text)',
    '_madbase.auth_user_state(uuid, uuid, text, text)',
    '_madbase.auth_use_nonce(uuid)',
    '_madbase.auth_unsend(uuid, text)'
  ] loop
    execute format('revoke all on function %s from public', f);
    execute format('grant execute on function %s to supabase_auth_admin', f);
  end loop;
end
$$;
