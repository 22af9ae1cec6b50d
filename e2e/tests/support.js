// Test support: starts a real MadBase (with its own managed PostgreSQL in a temporary data dir) on
// free ports and stops it afterwards. Nothing here is mocked.
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, mkdtempSync, rmSync, chmodSync } from 'node:fs';
import { createHmac } from 'node:crypto';
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
 * variables (e.g. `MADBASE_DB_SCHEMAS`); `smtp: true`, a real SMTP server (the sink of
 * scripts/smtp-sink.sh) that Auth sends its mail to, read with `server.mail.waitFor(to, subject)`;
 * `dataDir`, a data directory the caller owns (empty, or an earlier server's to start
 * again on: a restart); it is kept when this server stops.
 */
export async function startMadbase({ pgBin, env = {}, smtp = false, dataDir: reuse } = {}) {
  const bin = process.env.MADBASE_BIN ?? resolve('..', 'target', 'debug', 'madbase');
  const sink = smtp ? await startSmtpSink() : null;
  if (sink) {
    env = {
      MADBASE_AUTH_EMAIL_SMTP_ENABLED: 'true',
      MADBASE_AUTH_EMAIL_SMTP_HOST: '127.0.0.1',
      MADBASE_AUTH_EMAIL_SMTP_PORT: String(sink.port),
      ...env,
    };
  }
  const dataDir = reuse ?? mkdtempSync(join(tmpdir(), 'madbase-e2e-'));
  chmodSync(dataDir, 0o755); // the managed cluster may run as the unprivileged postgres user
  const removeDataDir = () => {
    if (!reuse) rmSync(dataDir, { recursive: true, force: true });
  };
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
  // A start that fails leaves nothing running: the server, its cluster and the SMTP sink go.
  const abort = async (message) => {
    if (child.exitCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(timer);
    }
    await sink?.stop();
    removeDataDir();
    throw new Error(message);
  };
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (child.exitCode !== null) await abort(`madbase exited early:\n${output}`);
    try {
      const r = await fetch(`${url}/health`);
      // Healthy, and done starting: the banner comes after the declared buckets' objects.
      if (r.status === 200 && output.includes('service_role key:')) break;
    } catch {}
    if (Date.now() > deadline) await abort(`madbase did not become healthy:\n${output}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  // Not on a terminal, MadBase prints the URL without the password and names the file holding it.
  const printed = /DB URL: (postgres:\/\/\S+) \(password in (\S+)\)/.exec(output);
  if (!printed) await abort(`madbase did not print the managed DB URL:\n${output}`);
  const dbUrlWithoutPassword = new URL(printed[1]);
  const password = readFileSync(printed[2], 'utf8').trim();
  if (output.includes(password)) await abort('madbase printed the superuser password off a terminal');
  dbUrlWithoutPassword.password = password;
  const dbUrl = dbUrlWithoutPassword.toString();
  return {
    url,
    dbUrl,
    /** The data directory (Storage keeps objects under `storage/`). */
    dataDir,
    output: () => output,
    /** The SMTP sink's mailbox (only with `smtp: true`). */
    mail: sink?.mailbox ?? null,
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
      await sink?.stop();
      removeDataDir();
    },
  };
}

/**
 * A supabase-js client for `server`, with the `ws` transport (Node 20 has no global WebSocket).
 * `auth` options go to auth-js (e.g. `{ flowType: 'pkce' }`); each client keeps its own session.
 */
export function client(server, key, { auth = {} } = {}) {
  return createClient(server.url, key, {
    realtime: { transport: WebSocket },
    auth: { autoRefreshToken: false, detectSessionInUrl: false, ...auth },
  });
}

// ---------------------------------------------------------------------------------------------
// Auth helpers

/** The payload of a JWT, decoded (no verification). */
export function decodeJwt(token) {
  const [header, payload] = token.split('.');
  const part = (p) => JSON.parse(Buffer.from(p, 'base64url').toString('utf8'));
  return { header: part(header), ...part(payload) };
}

/** An unsigned-but-well-formed JWT with the given header and payload and `signature` (base64url). */
export function makeJwt(header, payload, signature = '') {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${enc(header)}.${enc(payload)}.${signature}`;
}

/** An HS256 JWT signed with `secret` (default: the public demo secret MadBase uses). */
export function signJwt(payload, secret = DEMO_JWT_SECRET) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${enc({ alg: 'HS256', typ: 'JWT' })}.${enc(payload)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

export const DEMO_JWT_SECRET = 'super-secret-jwt-token-with-at-least-32-characters-long';

/** RFC 4648 base32 decoding (TOTP secrets). */
function base32Decode(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  const out = [];
  for (const c of text.replace(/=+$/, '').toUpperCase()) {
    const i = alphabet.indexOf(c);
    if (i < 0) throw new Error(`not base32: ${text}`);
    value = (value << 5) | i;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/** The RFC 6238 TOTP code (SHA-1, 6 digits, 30 s) of a base32 `secret` at `time` (ms). */
export function totp(secret, time = Date.now()) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(time / 1000 / 30)));
  const mac = createHmac('sha1', base32Decode(secret)).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const code = (mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000;
  return String(code).padStart(6, '0');
}

/**
 * A raw request to `/auth/v1<path>` (for what auth-js hides): `version` false leaves out
 * `X-Supabase-Api-Version` (GoTrue's legacy error shape). Returns `{status, headers, body, text}`.
 */
export async function authFetch(server, path, { method = 'GET', key = ANON_KEY, token, body, rawBody, headers = {}, version = true, redirect = 'manual' } = {}) {
  const h = { apikey: key, authorization: `Bearer ${token ?? key}`, ...headers };
  if (version) h['x-supabase-api-version'] = '2024-01-01';
  let payload;
  if (rawBody !== undefined) {
    payload = rawBody;
    h['content-type'] ??= 'application/json';
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    h['content-type'] ??= 'application/json;charset=UTF-8';
  }
  if (token === null) delete h.authorization;
  const r = await fetch(`${server.url}/auth/v1${path}`, { method, headers: h, body: payload, redirect });
  const text = await r.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {}
  return { status: r.status, headers: r.headers, body: json, text };
}

/** The parameters of a URL's fragment (`#a=1&b=2`) and query, as plain objects. */
export function urlParams(location) {
  const u = new URL(location);
  return {
    base: `${u.origin}${u.pathname}`,
    query: Object.fromEntries(u.searchParams),
    fragment: Object.fromEntries(new URLSearchParams(u.hash.replace(/^#/, ''))),
  };
}

// ---------------------------------------------------------------------------------------------
// SMTP sink: a real SMTP server (aiosmtpd, scripts/smtp-sink.sh) writing each message it
// receives into a directory, and a parser for what it wrote.

/**
 * Runs `scripts/<script>` with `args` (a test server that picks a free port and prints
 * "listening HOST PORT" once it accepts); resolves with its port and a `stop()`. The first run
 * may install the server's venv (pip): allow minutes.
 */
async function spawnListening(script, args, label) {
  const path = resolve(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', '..', 'scripts', script);
  if (!existsSync(path)) throw new Error(`${path} is missing`);
  const child = spawn('bash', [path, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stderr.on('data', (d) => (output += d));
  const port = await new Promise((res, rej) => {
    let stdout = '';
    const timer = setTimeout(() => rej(new Error(`${label} did not start:\n${output}${stdout}`)), 300_000);
    child.stdout.on('data', (d) => {
      stdout += d;
      const m = /listening \S+ (\d+)/.exec(stdout);
      if (m) {
        clearTimeout(timer);
        res(Number(m[1]));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      rej(new Error(`${label} exited (${code}):\n${output}${stdout}`));
    });
  }).catch((e) => {
    child.kill('SIGKILL');
    throw e;
  });
  return {
    port,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
    },
  };
}

export async function startSmtpSink() {
  const dir = mkdtempSync(join(tmpdir(), 'madbase-mail-'));
  const server = await spawnListening('smtp-sink.sh', ['--dir', dir, '--host', '127.0.0.1', '--port', '0'], 'the SMTP sink')
    .catch((e) => {
      rmSync(dir, { recursive: true, force: true });
      throw e;
    });
  return {
    port: server.port,
    mailbox: new Mailbox(dir),
    async stop() {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A test S3 server (moto, scripts/s3-server.sh) with one bucket; `env` is what points MadBase's
 * Storage at it, `keys()` lists the bucket's object keys.
 */
export async function startS3Server(bucket = 'madbase-objects') {
  const server = await spawnListening('s3-server.sh', ['--host', '127.0.0.1', '--port', '0'], 'the S3 server');
  const endpoint = `http://127.0.0.1:${server.port}`;
  const created = await fetch(`${endpoint}/${bucket}`, { method: 'PUT' });
  if (!created.ok) throw new Error(`cannot create the S3 bucket: ${created.status} ${await created.text()}`);
  return {
    env: {
      MADBASE_STORAGE_BACKEND: 's3',
      MADBASE_STORAGE_S3_BUCKET: bucket,
      MADBASE_STORAGE_S3_ENDPOINT: endpoint,
      MADBASE_STORAGE_S3_FORCE_PATH_STYLE: 'true',
      MADBASE_STORAGE_S3_ACCESS_KEY_ID: 'madbase-test',
      MADBASE_STORAGE_S3_SECRET_ACCESS_KEY: 'madbase-test',
    },
    async keys() {
      const keys = [];
      let token = '';
      for (;;) {
        const url = `${endpoint}/${bucket}?list-type=2${token ? `&continuation-token=${encodeURIComponent(token)}` : ''}`;
        const xml = await (await fetch(url)).text();
        keys.push(...[...xml.matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) => m[1]));
        const next = /<NextContinuationToken>([^<]*)<\/NextContinuationToken>/.exec(xml);
        if (!next) return keys;
        token = next[1];
      }
    },
    stop: () => server.stop(),
  };
}

/**
 * The messages the sink received (its NNNNNN.json records: envelope, decoded headers and body),
 * parsed; each is handed out once by `waitFor`.
 */
class Mailbox {
  constructor(dir) {
    this.dir = dir;
    this.taken = new Set();
    this.cache = new Map();
  }

  /** Every message received so far, oldest first: `{file, to, rcpt, from, subject, html, text, links, code}`. */
  all() {
    const files = readdirSync(this.dir)
      .filter((name) => /^\d+\.json$/.test(name))
      .sort();
    return files.map((name) => {
      if (!this.cache.has(name)) {
        const record = JSON.parse(readFileSync(join(this.dir, name), 'utf8'));
        const html = record.content_type === 'text/html' ? record.body : '';
        const text = record.content_type === 'text/html' ? record.body.replace(/<[^>]*>/g, ' ') : record.body;
        this.cache.set(name, {
          file: name,
          to: record.to,
          rcpt: record.rcpt_tos ?? [],
          from: record.from,
          subject: record.subject,
          html,
          text,
          ...extract(record.subject, record.body),
        });
      }
      return this.cache.get(name);
    });
  }

  static addressed(m, to) {
    const want = to.toLowerCase();
    return m.rcpt.some((r) => r.toLowerCase() === want) || m.to.toLowerCase().includes(want);
  }

  /**
   * Waits for the next message to `to` whose subject matches `subject` (a RegExp; default any)
   * that no earlier `waitFor` returned.
   */
  async waitFor(to, subject = /./, { timeout = 15_000 } = {}) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const found = this.all().find((m) => !this.taken.has(m.file) && Mailbox.addressed(m, to) && subject.test(m.subject));
      if (found) {
        this.taken.add(found.file);
        return found;
      }
      if (Date.now() > deadline) {
        const seen = this.all().map((m) => `${m.to}: ${m.subject}`);
        throw new Error(`no mail to ${to} matching ${subject} within ${timeout} ms; received: ${JSON.stringify(seen)}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Messages to `to` not yet handed out (for "nothing was sent" checks). */
  pending(to) {
    return this.all().filter((m) => !this.taken.has(m.file) && Mailbox.addressed(m, to));
  }
}

/** The links of a mail body and its one-time code (6–10 digits, outside links and tags). */
function extract(subject, body) {
  const links = [...new Set([...body.matchAll(/https?:\/\/[^\s"'<>]+/g)].map((m) => decodeEntities(m[0])))];
  const withoutLinks = body.replace(/https?:\/\/[^\s"'<>]+/g, ' ').replace(/<[^>]*>/g, ' ');
  const code = /(?<![0-9A-Za-z])(\d{6,10})(?![0-9A-Za-z])/.exec(`${subject} ${withoutLinks}`)?.[1] ?? null;
  return { links, code };
}

/** Parses an RFC 5322 message (MIME multipart, quoted-printable, base64, encoded words). */
export function parseMail(raw) {
  const { headers, body } = splitHeaders(raw);
  const parts = [];
  collectParts(headers, body, parts);
  const html = parts.find((p) => p.type === 'text/html')?.text ?? '';
  const text = parts.find((p) => p.type === 'text/plain')?.text ?? html.replace(/<[^>]*>/g, ' ');
  const subject = decodeWords(headers.subject ?? '');
  const { links, code } = extract(subject, html || text);
  return { to: decodeWords(headers.to ?? ''), from: decodeWords(headers.from ?? ''), subject, headers, html, text, links, code };
}

function splitHeaders(raw) {
  const sep = /\r?\n\r?\n/.exec(raw);
  const head = sep ? raw.slice(0, sep.index) : raw;
  const body = sep ? raw.slice(sep.index + sep[0].length) : '';
  const headers = {};
  for (const line of head.replace(/\r?\n[ \t]+/g, ' ').split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0) {
      const name = line.slice(0, i).trim().toLowerCase();
      if (!(name in headers)) headers[name] = line.slice(i + 1).trim();
    }
  }
  return { headers, body };
}

function collectParts(headers, body, out) {
  const type = (headers['content-type'] ?? 'text/plain').toLowerCase();
  const boundary = /boundary="?([^";]+)"?/i.exec(headers['content-type'] ?? '')?.[1];
  if (type.startsWith('multipart/') && boundary) {
    const pieces = body.split(`--${boundary}`).slice(1);
    for (const piece of pieces) {
      if (piece.startsWith('--')) break;
      const { headers: h, body: b } = splitHeaders(piece.replace(/^\r?\n/, ''));
      collectParts(h, b, out);
    }
    return;
  }
  const charset = /charset="?([^";]+)"?/i.exec(headers['content-type'] ?? '')?.[1]?.toLowerCase() ?? 'utf-8';
  const encoding = (headers['content-transfer-encoding'] ?? '7bit').toLowerCase();
  let bytes;
  if (encoding === 'base64') bytes = Buffer.from(body.replace(/\s+/g, ''), 'base64');
  else if (encoding === 'quoted-printable') bytes = decodeQuotedPrintable(body);
  else bytes = Buffer.from(body, 'latin1');
  const text = bytes.toString(charset.includes('8859') || charset === 'us-ascii' ? 'latin1' : 'utf8');
  out.push({ type: type.split(';')[0].trim(), text });
}

function decodeQuotedPrintable(body) {
  const soft = body.replace(/=\r?\n/g, '');
  const bytes = [];
  for (let i = 0; i < soft.length; i++) {
    if (soft[i] === '=' && /^[0-9A-Fa-f]{2}$/.test(soft.slice(i + 1, i + 3))) {
      bytes.push(parseInt(soft.slice(i + 1, i + 3), 16));
      i += 2;
    } else bytes.push(soft.charCodeAt(i) & 0xff);
  }
  return Buffer.from(bytes);
}

function decodeWords(value) {
  return value
    .replace(/\?=\s+=\?/g, '?==?')
    .replace(/=\?([^?]+)\?([bBqQ])\?([^?]*)\?=/g, (_, charset, enc, data) => {
      const bytes =
        enc.toUpperCase() === 'B'
          ? Buffer.from(data, 'base64')
          : decodeQuotedPrintable(data.replace(/_/g, ' '));
      return bytes.toString(/8859/i.test(charset) ? 'latin1' : 'utf8');
    });
}

function decodeEntities(text) {
  return text
    .replace(/&amp;/g, '&')
    .replace(/&#x([0-9a-f]+);/gi, (_, h) => String.fromCodePoint(parseInt(h, 16)))
    .replace(/&#(\d+);/g, (_, d) => String.fromCodePoint(Number(d)))
    .replace(/&quot;/g, '"')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>');
}

/**
 * Auth settings every Auth test server starts with: rate limits high enough that a test file's
 * traffic from one address never meets them (the limits themselves have their own test).
 */
export const AUTH_TEST_ENV = {
  MADBASE_AUTH_RATE_LIMIT_EMAIL_SENT: '1000',
  MADBASE_AUTH_RATE_LIMIT_SMS_SENT: '1000',
  MADBASE_AUTH_RATE_LIMIT_ANONYMOUS_USERS: '1000',
  MADBASE_AUTH_RATE_LIMIT_TOKEN_REFRESH: '1000',
  MADBASE_AUTH_RATE_LIMIT_SIGN_IN_SIGN_UPS: '1000',
  MADBASE_AUTH_RATE_LIMIT_TOKEN_VERIFICATIONS: '1000',
};

let emailCounter = 0;
/** A fresh address for one test (lower case, as GoTrue stores them). */
export function uniqueEmail(label = 'user') {
  emailCounter += 1;
  return `${label}-${process.pid}-${Date.now().toString(36)}-${emailCounter}@example.com`;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Realtime helpers

/** Subscribes a realtime-js channel; resolves with the final status (and error) it reports. */
export function subscribeChannel(channel) {
  return new Promise((resolve) => {
    channel.subscribe((status, error) => {
      if (['SUBSCRIBED', 'CHANNEL_ERROR', 'TIMED_OUT'].includes(status)) resolve({ status, error });
    });
  });
}

/** Polls `predicate` every 20 ms until it returns something truthy (resolved with it) or `ms` pass. */
export function waitFor(predicate, what, ms = 10000) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const tick = () => {
      const got = predicate();
      if (got) return resolve(got);
      if (Date.now() - started > ms) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, 20);
    };
    tick();
  });
}
