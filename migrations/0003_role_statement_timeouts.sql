-- Supabase's per-role statement timeouts: a request as `anon` may run 3 s, as `authenticated` 8 s,
-- and the login role itself 8 s. MadBase applies a role's settings in every request's transaction
-- (as PostgREST does), so one slow query cannot hold a database connection for longer. Change
-- them with `alter role … set statement_timeout = …` and `notify pgrst, 'reload config'`.
alter role anon set statement_timeout = '3s';
alter role authenticated set statement_timeout = '8s';
alter role authenticator set statement_timeout = '8s';
