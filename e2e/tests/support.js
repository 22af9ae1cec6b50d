// Test support: starts a real MadBase (with its own managed PostgreSQL in a temporary data dir) on
// free ports and stops it afterwards. Nothing here is mocked.
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, mkdtempSync, rmSync, chmodSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createClient } from '@supabase/supabase-js';
import WebSocket from 'ws';

// The well-known keys of Supabase's local development stack; MadBase uses the same demo secret
// when none is configured.
export const ANON_KEY =
  'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6ImFub24iLCJleHAiOjE5ODM4MTI5OTZ9.CRXP1A7WOeoJeXxjNni43kdQwgnWNReilDMblYTn_I0';
export const SERVICE_ROLE_KEY =
  'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6InNlcnZpY2Vfcm9sZSIsImV4cCI6MTk4MzgxMjk5Nn0.EGIM96RAZx35lJzdJsyH-qQwv8Hdp7fsn3W0YpN81IU';

function freePort() {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

function psqlPath() {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir && existsSync(join(dir, 'psql'))) return join(dir, 'psql');
  }
  const versions = existsSync('/usr/lib/postgresql') ? readdirSync('/usr/lib/postgresql').sort() : [];
  for (const v of versions.reverse()) {
    const candidate = `/usr/lib/postgresql/${v}/bin/psql`;
    if (existsSync(candidate)) return candidate;
  }
  throw new Error('psql not found: install the PostgreSQL client (apt install postgresql-client)');
}

/**
 * Starts `madbase start`. Options: `pgBin`, the directory of the PostgreSQL server binaries for the
 * managed cluster (MADBASE_PG_BIN; default: MadBase's own search); `env`, more environment
 * variables (e.g. `MADBASE_DB_SCHEMAS`).
 */
export async function startMadbase({ pgBin, env = {} } = {}) {
  const bin = process.env.MADBASE_BIN ?? resolve('..', 'target', 'debug', 'madbase');
  const dataDir = mkdtempSync(join(tmpdir(), 'madbase-e2e-'));
  chmodSync(dataDir, 0o755); // the managed cluster may run as the unprivileged postgres user
  const port = await freePort();
  const pgPort = await freePort();
  const child = spawn(bin, ['start'], {
    env: {
      ...process.env,
      MADBASE_LISTEN: `127.0.0.1:${port}`,
      MADBASE_DATA_DIR: dataDir,
      MADBASE_PG_PORT: String(pgPort),
      MADBASE_SHARDS: '2',
      MADBASE_LOG: 'warn',
      ...(pgBin ? { MADBASE_PG_BIN: pgBin } : {}),
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`madbase exited early:\n${output}`);
    try {
      const r = await fetch(`${url}/health`);
      if (r.status === 200) break;
    } catch {}
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`madbase did not become healthy:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  // Not on a terminal, MadBase prints the URL without the password and names the file holding it.
  const printed = /DB URL: (postgres:\/\/\S+) \(password in (\S+)\)/.exec(output);
  if (!printed) throw new Error(`madbase did not print the managed DB URL:\n${output}`);
  const dbUrlWithoutPassword = new URL(printed[1]);
  const password = readFileSync(printed[2], 'utf8').trim();
  if (output.includes(password)) throw new Error('madbase printed the superuser password off a terminal');
  dbUrlWithoutPassword.password = password;
  const dbUrl = dbUrlWithoutPassword.toString();
  return {
    url,
    dbUrl,
    output: () => output,
    /**
     * Waits until the schema cache (reloaded by MadBase's DDL trigger) knows `relation`: until
     * then `/rest/v1/<relation>` answers PGRST205.
     */
    async waitForRelation(relation) {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const r = await fetch(`${url}/rest/v1/${relation}?limit=0`, {
          headers: { apikey: SERVICE_ROLE_KEY, authorization: `Bearer ${SERVICE_ROLE_KEY}` },
        });
        const body = await r.json().catch(() => ({}));
        if (body.code !== 'PGRST205') return;
        if (Date.now() > deadline) throw new Error(`schema cache never saw ${relation}`);
        await new Promise((res) => setTimeout(res, 50));
      }
    },
    /** Runs SQL as the managed cluster's superuser (psql from the PostgreSQL install). */
    sql(text) {
      return execFileSync(psqlPath(), [dbUrl, '-v', 'ON_ERROR_STOP=1', '-qAt', '-c', text], {
        encoding: 'utf8',
      });
    },
    async stop() {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(timer);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** A supabase-js client for `server`, with the `ws` transport (Node 20 has no global WebSocket). */
export function client(server, key) {
  return createClient(server.url, key, { realtime: { transport: WebSocket } });
}
