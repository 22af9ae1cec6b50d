-- MadBase Auth: the admin API's database side (auth/src/admin.rs), so that each admin request is
-- one statement batch. Everything runs as supabase_auth_admin.

-- GoTrue's metadata update (models.User.UpdateUserMetaData / UpdateAppMetaData): a shallow merge in
-- which a JSON null deletes its key. A stored value that is not an object counts as {}.
create or replace function _madbase.auth_jsonb_merge(p_base jsonb, p_updates jsonb)
returns jsonb
language sql immutable
set search_path = ''
as $$
  select (case when pg_catalog.jsonb_typeof(p_base) = 'object' then p_base else '{}'::jsonb end
          operator(pg_catalog.-) coalesce((select pg_catalog.array_agg(e.key) from pg_catalog.jsonb_each(p_updates) e
                                           where e.value = 'null'::jsonb), '{}'::text[]))
         operator(pg_catalog.||)
         coalesce((select pg_catalog.jsonb_object_agg(e.key, e.value) from pg_catalog.jsonb_each(p_updates) e
                   where e.value <> 'null'::jsonb), '{}'::jsonb)
$$;

-- GoTrue's obfuscateValue: base64url (unpadded) of SHA-256(user id as text || value).
create or replace function _madbase.auth_obfuscate(p_user uuid, p_value text)
returns text
language sql immutable
set search_path = ''
as $$
  select pg_catalog.rtrim(pg_catalog.translate(
           pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(p_user::text || coalesce(p_value, ''), 'UTF8')),
                             'base64'),
           '+/', '-_'), '=')
$$;

-- The duplicate checks of POST /admin/users and PUT /admin/users/<id> (models.IsDuplicatedEmail,
-- IsDuplicatedPhone): an email is taken when another user of the audience has it, or has an
-- identity with it (SSO identities excepted); a phone when another user of the audience has it.
-- Raises MBAD1 (email_exists) or MBAD2 (phone_exists). `p_user`: the user being updated, or NULL;
-- `p_aud` NULL: that user's audience.
create or replace function _madbase.auth_admin_check_addresses(p_user uuid, p_email text, p_phone text, p_aud text)
returns void
language plpgsql stable
set search_path = ''
as $$
begin
  if p_aud is null then
    select u.aud into p_aud from auth.users u where u.id = p_user;
  end if;
  if p_email is not null and (
       exists (select 1 from auth.identities i join auth.users u on u.id = i.user_id
               where i.email = pg_catalog.lower(p_email) and i.provider not like 'sso:%'
                 and u.aud = p_aud and u.id is distinct from p_user)
       or exists (select 1 from auth.users u
                  where u.instance_id = '00000000-0000-0000-0000-000000000000'
                    and pg_catalog.lower(u.email) = pg_catalog.lower(p_email) and u.aud = p_aud
                    and not u.is_sso_user and u.id is distinct from p_user)) then
    raise exception using errcode = 'MBAD1', message = 'A user with this email address has already been registered';
  end if;
  if p_phone is not null and exists (
       select 1 from auth.users u
       where u.instance_id = '00000000-0000-0000-0000-000000000000'
         and u.phone = p_phone and u.aud = p_aud and u.id is distinct from p_user) then
    raise exception using errcode = 'MBAD2', message = 'Phone number already registered by another user';
  end if;
end
$$;

-- One audit-log row about user `p_user` (models.NewAuditLogEntry). The actor is an admin (GoTrue's
-- admin actor: the nil user, named by its role `p_actor`) or, when `p_actor` is NULL, the user
-- itself. Traits: `p_traits`, after user_id, user_email and user_phone when `p_user_traits`. No row
-- when the user does not exist.
create or replace function _madbase.auth_admin_audit(p_user uuid, p_actor text, p_action text, p_log_type text,
                                                     p_user_traits boolean, p_traits jsonb, p_ip text)
returns void
language sql volatile
set search_path = ''
as $$
  insert into auth.audit_log_entries (instance_id, id, payload, created_at, ip_address)
  select '00000000-0000-0000-0000-000000000000', pg_catalog.gen_random_uuid(),
         (case when p_actor is null then
            pg_catalog.jsonb_build_object(
              'actor_id', u.id, 'actor_via_sso', u.is_sso_user,
              'actor_username', coalesce(nullif(u.phone, ''), u.email, ''))
            operator(pg_catalog.||) case when u.raw_user_meta_data ? 'full_name'
                                         then pg_catalog.jsonb_build_object('actor_name', u.raw_user_meta_data -> 'full_name')
                                         else '{}'::jsonb end
          else
            pg_catalog.jsonb_build_object(
              'actor_id', '00000000-0000-0000-0000-000000000000', 'actor_via_sso', false, 'actor_username', p_actor)
          end
          operator(pg_catalog.||) pg_catalog.jsonb_build_object(
            'action', p_action, 'log_type', p_log_type,
            'traits', case when p_user_traits
                           then pg_catalog.jsonb_build_object('user_id', u.id, 'user_email', coalesce(u.email, ''),
                                                              'user_phone', coalesce(u.phone, ''))
                           else '{}'::jsonb end
                      operator(pg_catalog.||) coalesce(p_traits, '{}'::jsonb)))::json,
         pg_catalog.now(), coalesce(p_ip, '')
  from auth.users u where u.id = p_user
$$;

-- GoTrue's soft delete (adminUserDelete with should_soft_delete: SoftDeleteUser,
-- SoftDeleteUserIdentities, DeleteFactorsByUserId, Logout): addresses obfuscated (the phone cut
-- to 15 characters), password and pending tokens cleared, metadata emptied, deleted_at set,
-- identities' data emptied and provider ids obfuscated, factors, one-time tokens and sessions
-- deleted. A user already soft-deleted is left as it is. Returns whether the user exists.
create or replace function _madbase.auth_admin_soft_delete(p_user uuid)
returns boolean
language plpgsql volatile
set search_path = ''
as $$
declare
  v_deleted_at timestamptz;
begin
  select u.deleted_at into v_deleted_at from auth.users u where u.id = p_user for update;
  if not found then
    return false;
  end if;
  if v_deleted_at is not null then
    return true;
  end if;
  update auth.users u set
    email = _madbase.auth_obfuscate(u.id, u.email),
    phone = pg_catalog.left(_madbase.auth_obfuscate(u.id, u.phone), 15),
    email_change = _madbase.auth_obfuscate(u.id, u.email_change),
    phone_change = pg_catalog.left(_madbase.auth_obfuscate(u.id, u.phone_change), 15),
    encrypted_password = null,
    confirmation_token = '', recovery_token = '', email_change_token_current = '',
    email_change_token_new = '', phone_change_token = '',
    raw_user_meta_data = '{}'::jsonb, raw_app_meta_data = '{}'::jsonb,
    deleted_at = pg_catalog.now(), updated_at = pg_catalog.now()
  where u.id = p_user;
  delete from auth.one_time_tokens t where t.user_id = p_user;
  update auth.identities i set
    identity_data = '{}'::jsonb,
    provider_id = _madbase.auth_obfuscate(i.user_id, i.provider || ':' || i.provider_id),
    updated_at = pg_catalog.now()
  where i.user_id = p_user;
  delete from auth.mfa_factors f where f.user_id = p_user;
  delete from auth.sessions s where s.user_id = p_user;
  return true;
end
$$;

revoke all on function _madbase.auth_jsonb_merge(jsonb, jsonb) from public;
revoke all on function _madbase.auth_obfuscate(uuid, text) from public;
revoke all on function _madbase.auth_admin_check_addresses(uuid, text, text, text) from public;
revoke all on function _madbase.auth_admin_audit(uuid, text, text, text, boolean, jsonb, text) from public;
revoke all on function _madbase.auth_admin_soft_delete(uuid) from public;
grant execute on function _madbase.auth_jsonb_merge(jsonb, jsonb) to supabase_auth_admin;
grant execute on function _madbase.auth_obfuscate(uuid, text) to supabase_auth_admin;
grant execute on function _madbase.auth_admin_check_addresses(uuid, text, text, text) to supabase_auth_admin;
grant execute on function _madbase.auth_admin_audit(uuid, text, text, text, boolean, jsonb, text) to supabase_auth_admin;
grant execute on function _madbase.auth_admin_soft_delete(uuid) to supabase_auth_admin;
