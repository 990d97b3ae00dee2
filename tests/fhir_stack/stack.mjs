#!/usr/bin/env node
// Starts the test FHIR R4 server and the SMART authorization server in one process.
//
//   node tests/fhir_stack/stack.mjs [seed-bundle.json ...]
//
// Environment knobs (defaults in brackets), documented in tests/fhir_stack/README.md:
//   FHIR_HOST [127.0.0.1]  FHIR_PORT [8080, 0 = any free port]  AUTH_PORT [8081, 0 = any free port]
//   FHIR_BEARER_TOKENS [cds-test-token]  FHIR_REQUIRE_AUTH [true]
//   FHIR_DEFAULT_COUNT [20]  FHIR_MAX_COUNT [1000]  FHIR_SEED [comma-separated bundle paths]
//   SMART_CLIENT_ID [smart-app]  SMART_REDIRECT_URIS [http://127.0.0.1:5000/smart/callback]
//   SMART_TOKEN_TTL [3600]  SMART_DENY_PATIENTS []  SMART_EXTRA_SCOPES []
//   SMART_BACKEND_CLIENTS [JSON file path or inline JSON array]  SMART_BACKEND_TOKEN_TTL [300]
//   BULK_EXPORT_DELAY_MS [0]  BULK_EXPORT_MAX_PER_FILE [1000]
//   FHIR_SUBSCRIPTIONS [true]  FHIR_SUBSCRIPTION_TIMEOUT_MS [10000]
//   STACK_ADMIN [false: /_admin/faults and /_admin/revoke-tokens]
//   STACK_LOG [false: print request lines to stderr]
//
// When both servers listen and all seeds are loaded it prints ONE JSON line on stdout:
//   {"event":"ready","fhir_base":...,"auth_base":...,"smart_configuration":...,...}
import { createServer } from 'node:http';
import { resolve } from 'node:path';
import { loadBackendClients } from './backend-auth.mjs';
import { Faults } from './faults.mjs';
import { FhirServer, loadSchema, readBody, sendJson } from './fhir-server.mjs';
import { SmartAuth, TEST_USER_ID } from './smart-auth.mjs';
import { TOPICS } from './subscriptions.mjs';

const started = Date.now();
const env = process.env;

/** @param {string | undefined} value */
function list(value) {
  return (value ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/** @param {string} name @param {number} fallback */
function intEnv(name, fallback) {
  const raw = env[name];
  if (raw === undefined || raw === '') {
    return fallback;
  }
  const n = Number.parseInt(raw, 10);
  if (!Number.isFinite(n) || n < 0 || String(n) !== raw.trim()) {
    throw new Error(`${name} must be a non-negative integer, got '${raw}'`);
  }
  return n;
}

/** @param {string} name @param {boolean} fallback */
function boolEnv(name, fallback) {
  const raw = (env[name] ?? '').trim().toLowerCase();
  if (!raw) {
    return fallback;
  }
  if (['1', 'true', 'yes'].includes(raw)) {
    return true;
  }
  if (['0', 'false', 'no'].includes(raw)) {
    return false;
  }
  throw new Error(`${name} must be true or false, got '${env[name]}'`);
}

function log(msg) {
  process.stderr.write(`[fhir-stack] ${msg}\n`);
}

const host = env.FHIR_HOST || '127.0.0.1';
const config = {
  fhirPort: intEnv('FHIR_PORT', 8080),
  authPort: intEnv('AUTH_PORT', 8081),
  tokens: env.FHIR_BEARER_TOKENS === undefined ? ['cds-test-token'] : list(env.FHIR_BEARER_TOKENS),
  requireAuth: !['false', '0', 'no'].includes((env.FHIR_REQUIRE_AUTH ?? 'true').toLowerCase()),
  defaultCount: intEnv('FHIR_DEFAULT_COUNT', 20),
  maxCount: intEnv('FHIR_MAX_COUNT', 1000),
  clientId: env.SMART_CLIENT_ID || 'smart-app',
  redirectUris: env.SMART_REDIRECT_URIS === undefined
    ? ['http://127.0.0.1:5000/smart/callback']
    : list(env.SMART_REDIRECT_URIS),
  tokenTtl: intEnv('SMART_TOKEN_TTL', 3600),
  denyPatients: list(env.SMART_DENY_PATIENTS),
  extraScopes: list(env.SMART_EXTRA_SCOPES).flatMap((s) => s.split(' ')).filter(Boolean),
  seeds: [...process.argv.slice(2), ...list(env.FHIR_SEED)].map((p) => resolve(p)),
  verbose: ['1', 'true', 'yes'].includes((env.STACK_LOG ?? '').toLowerCase()),
  backendClients: loadBackendClients(env.SMART_BACKEND_CLIENTS),
  backendTokenTtl: intEnv('SMART_BACKEND_TOKEN_TTL', 300),
  bulkDelayMs: intEnv('BULK_EXPORT_DELAY_MS', 0),
  bulkMaxPerFile: intEnv('BULK_EXPORT_MAX_PER_FILE', 1000),
  subscriptions: boolEnv('FHIR_SUBSCRIPTIONS', true),
  subscriptionTimeoutMs: intEnv('FHIR_SUBSCRIPTION_TIMEOUT_MS', 10000),
  admin: boolEnv('STACK_ADMIN', false),
};
if (config.maxCount < 1) {
  throw new Error('FHIR_MAX_COUNT must be at least 1');
}
for (const name of ['tokenTtl', 'backendTokenTtl', 'bulkMaxPerFile', 'subscriptionTimeoutMs']) {
  if (config[name] < 1) {
    throw new Error(`${name} must be at least 1 (see the environment knobs in tests/fhir_stack/README.md)`);
  }
}

/** @param {number} port @returns {Promise<import('node:http').Server>} */
function listen(server, port) {
  return new Promise((resolvePromise, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolvePromise(server);
    });
  });
}

let fhir;
let auth;
const faults = new Faults();
const fhirHttp = createServer((req, res) => dispatch('fhir', req, res, () => fhir.handle(req, res, controlRoutes)));
const authHttp = createServer((req, res) => dispatch('auth', req, res, () => authRoute(req, res)));
// Keep-alive sockets must not delay shutdown.
for (const s of [fhirHttp, authHttp]) {
  s.keepAliveTimeout = 5000;
}

/** Wraps a handler with request logging, injected faults (STACK_ADMIN) and a last-resort 500. */
function dispatch(server, req, res, handler) {
  const t0 = Date.now();
  if (config.verbose) {
    res.on('finish', () => log(`${req.method} ${req.url} -> ${res.statusCode} (${Date.now() - t0} ms)`));
  }
  Promise.resolve()
    .then(async () => {
      if (!(config.admin && (await faults.apply(server, req, res)))) {
        await handler();
      }
    })
    .catch((err) => {
      log(`unhandled error on ${req.method} ${req.url}: ${err?.stack ?? err}`);
      if (!res.headersSent) {
        sendJson(res, 500, { error: 'internal', message: String(err?.message ?? err) });
      } else {
        res.end();
      }
    });
}

async function authRoute(req, res) {
  const url = new URL(req.url ?? '/', 'http://localhost');
  if (url.pathname === '/healthz') {
    sendJson(res, 200, { status: 'ok', component: 'smart-auth' });
    return;
  }
  await auth.handle(req, res, readBody);
}

/** Test-only control endpoints on the FHIR port (outside the FHIR base; no auth, loopback only). */
const controlRoutes = {
  '/healthz': async (req, res) => {
    sendJson(res, 200, { status: 'ok', component: 'fhir', uptime_ms: Date.now() - started });
  },
  '/_control/reset': async (req, res, url) => {
    if (req.method !== 'POST') {
      sendJson(res, 405, { error: 'POST only' });
      return;
    }
    const reseed = url.searchParams.get('seed') !== 'false';
    const loaded = await fhir.reset(reseed);
    await createTestUser();
    sendJson(res, 200, { status: 'reset', seeded_entries: loaded });
  },
  '/_control/stats': async (req, res) => {
    const counts = {};
    for (const [type, resources] of fhir.repo.resources) {
      if (resources.size) {
        counts[type] = resources.size;
      }
    }
    sendJson(res, 200, { resources: counts });
  },
  ...adminRoutes(),
};

/** Test-only admin endpoints (fault injection, token revocation); 404 unless STACK_ADMIN=true. */
function adminRoutes() {
  const paths = ['/_admin/faults', '/_admin/revoke-tokens'];
  if (!config.admin) {
    const disabled = async (req, res) =>
      sendJson(res, 404, { error: 'admin endpoints are disabled; start the stack with STACK_ADMIN=true' });
    return Object.fromEntries(paths.map((p) => [p, disabled]));
  }
  return {
    '/_admin/faults': async (req, res) => {
      if (req.method === 'GET') {
        sendJson(res, 200, { faults: faults.list() });
      } else if (req.method === 'DELETE') {
        sendJson(res, 200, { cleared: faults.clear() });
      } else if (req.method === 'POST') {
        let body;
        try {
          body = await readBody(req);
          const added = (Array.isArray(body) ? body : [body]).map((spec) => faults.add(spec));
          sendJson(res, 201, { faults: added });
        } catch (err) {
          sendJson(res, 400, { error: String(err?.message ?? err) });
        }
      } else {
        sendJson(res, 405, { error: 'GET, POST or DELETE' });
      }
    },
    '/_admin/revoke-tokens': async (req, res) => {
      if (req.method !== 'POST') {
        sendJson(res, 405, { error: 'POST only' });
        return;
      }
      sendJson(res, 200, { revoked: await auth.revokeBackendTokens() });
    },
  };
}

/** The SMART test user's Practitioner (the id_token's fhirUser points at it). */
async function createTestUser() {
  await fhir.repo.updateResource({
    resourceType: 'Practitioner',
    id: TEST_USER_ID,
    name: [{ family: 'User', given: ['SMART Test'] }],
  });
}

async function main() {
  const schema = loadSchema();
  await listen(fhirHttp, config.fhirPort);
  await listen(authHttp, config.authPort);
  const fhirPort = fhirHttp.address().port;
  const authPort = authHttp.address().port;
  const fhirBase = `http://${host}:${fhirPort}/fhir`;
  const authBase = `http://${host}:${authPort}`;

  auth = new SmartAuth({
    issuer: authBase,
    fhirBase,
    clientId: config.clientId,
    redirectUris: config.redirectUris,
    tokenTtl: config.tokenTtl,
    denyPatients: config.denyPatients,
    extraScopes: config.extraScopes,
    backendClients: config.backendClients,
    backendTokenTtl: config.backendTokenTtl,
    log,
  });
  fhir = new FhirServer({
    baseUrl: fhirBase,
    defaultCount: config.defaultCount,
    maxCount: config.maxCount,
    requireAuth: config.requireAuth,
    staticTokens: config.tokens,
    resolveToken: (token) => auth.resolveAccessToken(token),
    smartConfiguration: () => auth.smartConfiguration(),
    oauthUris: { authorize: `${authBase}/auth`, token: `${authBase}/token` },
    seedPaths: config.seeds,
    bulk: { delayMs: config.bulkDelayMs, maxPerFile: config.bulkMaxPerFile },
    subscriptions: { enabled: config.subscriptions, timeoutMs: config.subscriptionTimeoutMs },
    log,
  });
  const seeded = await fhir.loadSeeds();
  await createTestUser();

  const ready = {
    event: 'ready',
    fhir_base: fhirBase,
    auth_base: authBase,
    fhir_port: fhirPort,
    auth_port: authPort,
    smart_configuration: `${fhirBase}/.well-known/smart-configuration`,
    ehr_launch: `${authBase}/ehr/launch?patient={patient}&launch_uri={launch_uri}`,
    tokens: config.tokens,
    require_auth: config.requireAuth,
    client_id: config.clientId,
    redirect_uris: config.redirectUris,
    default_count: config.defaultCount,
    max_count: config.maxCount,
    token_ttl: config.tokenTtl,
    token_endpoint: `${authBase}/token`,
    backend_clients: config.backendClients.map((c) => c.clientId),
    backend_token_ttl: config.backendTokenTtl,
    bulk_export: `${fhirBase}/$export`,
    bulk_export_delay_ms: config.bulkDelayMs,
    bulk_export_max_per_file: config.bulkMaxPerFile,
    subscriptions: config.subscriptions,
    subscription_topics: config.subscriptions ? Object.keys(TOPICS) : [],
    admin: config.admin,
    seeds: config.seeds,
    seeded_entries: seeded,
    cut_search_parameters: schema.cutParameters,
    pid: process.pid,
    startup_ms: Date.now() - started,
  };
  process.stdout.write(`${JSON.stringify(ready)}\n`);
}

function shutdown(signal) {
  log(`${signal}: shutting down`);
  for (const s of [fhirHttp, authHttp]) {
    s.close();
    s.closeAllConnections?.();
  }
  setTimeout(() => process.exit(0), 200).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

main().catch((err) => {
  log(`failed to start: ${err?.stack ?? err}`);
  process.exit(1);
});
