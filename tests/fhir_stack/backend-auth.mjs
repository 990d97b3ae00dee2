// SMART Backend Services (SMART App Launch 2.x): the registered backend clients and the system
// scopes they may be granted, and the scope checks the FHIR server applies to their access tokens.
//
// The token endpoint itself is oidc-provider's (client_credentials grant + private_key_jwt client
// authentication, RFC 7523); smart-auth.mjs configures it with the functions below.
import { readFileSync } from 'node:fs';

/** Client assertion signing algorithms SMART Backend Services requires servers to support. */
export const BACKEND_SIGNING_ALGS = ['RS384', 'ES384'];
/** The longest a client assertion may live (SMART: exp no more than five minutes in the future). */
export const MAX_ASSERTION_LIFETIME_S = 300;
/** Scope a registered client may be granted when its registration names none. */
export const DEFAULT_BACKEND_SCOPE = 'system/*.cruds';

/** SMART v1 permission words and the v2 letters they stand for. */
const V1_PERMISSIONS = { read: 'rs', write: 'cud', '*': 'cruds' };
const V2_ORDER = 'cruds';
const SCOPE_PATTERN = /^system\/(\*|[A-Z][A-Za-z]+)\.([a-z*]+)$/;

/**
 * Parses one system scope: `system/Observation.rs`, `system/*.read`, `system/*.cud` ...
 * v2 letters must be a subset of "cruds" in that order. Scopes with a query (`?category=...`)
 * are refused: the test server cannot enforce them.
 * @param {string} scope
 * @returns {{ scope: string, type: string, permissions: Set<string>, version: 1 | 2 } | undefined}
 */
export function parseSystemScope(scope) {
  const match = SCOPE_PATTERN.exec(scope);
  if (!match) {
    return undefined;
  }
  const [, type, permission] = match;
  if (Object.hasOwn(V1_PERMISSIONS, permission)) {
    return { scope, type, permissions: new Set(V1_PERMISSIONS[permission]), version: 1 };
  }
  let last = -1;
  for (const letter of permission) {
    const index = V2_ORDER.indexOf(letter);
    if (index <= last) {
      return undefined; // unknown letter, repeated, or out of order ("sr")
    }
    last = index;
  }
  return { scope, type, permissions: new Set(permission), version: 2 };
}

/**
 * True when `allowed` (a parsed scope) grants everything `requested` asks for.
 * @param {ReturnType<typeof parseSystemScope>} allowed
 * @param {ReturnType<typeof parseSystemScope>} requested
 */
function covers(allowed, requested) {
  if (allowed.type !== '*' && allowed.type !== requested.type) {
    return false;
  }
  return [...requested.permissions].every((p) => allowed.permissions.has(p));
}

/**
 * Decides which requested scopes a client gets (RFC 6749 section 3.3: the server may issue fewer).
 * Malformed or non-system scopes make the whole request fail; well-formed scopes the client is not
 * registered for are left out of the grant; nothing left -> failure.
 * @param {string | undefined} requested space-separated scope parameter
 * @param {string[]} allowedScopes the client's registered scopes
 * @returns {{ granted: string[] } | { error: string }}
 */
export function grantSystemScopes(requested, allowedScopes) {
  const words = (requested ?? '').split(' ').filter(Boolean);
  if (!words.length) {
    return { error: 'scope is required (system scopes, e.g. system/*.rs)' };
  }
  const allowed = allowedScopes.map(parseSystemScope).filter(Boolean);
  const granted = [];
  for (const word of words) {
    const parsed = parseSystemScope(word);
    if (!parsed) {
      return { error: `unsupported scope '${word}' (backend services grant system/<Type|*>.<cruds|read|write|*> only)` };
    }
    if (allowed.some((a) => covers(a, parsed)) && !granted.includes(word)) {
      granted.push(word);
    }
  }
  if (!granted.length) {
    return { error: `none of the requested scopes is allowed for this client (allowed: ${allowedScopes.join(' ')})` };
  }
  return { granted };
}

/**
 * Does a set of granted scope strings allow `permission` ("c", "r", "u", "d" or "s") on `type`?
 * @param {string[]} scopes
 * @param {string} type
 * @param {string} permission
 */
export function scopesAllow(scopes, type, permission) {
  return scopes
    .map(parseSystemScope)
    .some((s) => s && (s.type === '*' || s.type === type) && s.permissions.has(permission));
}

/**
 * Loads SMART_BACKEND_CLIENTS: a JSON file path or inline JSON (starting with "["), holding
 * `[{"client_id": "...", "jwks": {"keys": [...]}} | "jwks_uri": "...", "scope": "system/*.rs ..."}]`.
 * @param {string | undefined} value
 * @returns {{ clientId: string, jwks?: object, jwksUri?: string, scopes: string[] }[]}
 */
export function loadBackendClients(value) {
  const raw = (value ?? '').trim();
  if (!raw) {
    return [];
  }
  const text = raw.startsWith('[') ? raw : readFileSync(raw, 'utf8');
  let entries;
  try {
    entries = JSON.parse(text);
  } catch (err) {
    throw new Error(`SMART_BACKEND_CLIENTS is not valid JSON: ${err.message}`);
  }
  if (!Array.isArray(entries)) {
    throw new Error('SMART_BACKEND_CLIENTS must hold a JSON array of clients');
  }
  const seen = new Set();
  return entries.map((entry, i) => {
    const where = `SMART_BACKEND_CLIENTS[${i}]`;
    if (!entry || typeof entry.client_id !== 'string' || !entry.client_id) {
      throw new Error(`${where}: client_id is required`);
    }
    if (seen.has(entry.client_id)) {
      throw new Error(`${where}: duplicate client_id '${entry.client_id}'`);
    }
    seen.add(entry.client_id);
    if (Boolean(entry.jwks) === Boolean(entry.jwks_uri)) {
      throw new Error(`${where}: exactly one of jwks and jwks_uri is required`);
    }
    if (entry.jwks && !Array.isArray(entry.jwks.keys)) {
      throw new Error(`${where}: jwks must be a JWK Set ({"keys": [...]})`);
    }
    for (const key of entry.jwks?.keys ?? []) {
      if (key.d || key.p || key.q) {
        throw new Error(`${where}: jwks must hold public keys only`);
      }
    }
    const scopeText = Array.isArray(entry.scope) ? entry.scope.join(' ') : (entry.scope ?? DEFAULT_BACKEND_SCOPE);
    const scopes = String(scopeText).split(' ').filter(Boolean);
    for (const scope of scopes) {
      if (!parseSystemScope(scope)) {
        throw new Error(`${where}: '${scope}' is not a system scope`);
      }
    }
    return { clientId: entry.client_id, jwks: entry.jwks, jwksUri: entry.jwks_uri, scopes };
  });
}

/**
 * The (resourceType, permission) pairs one FHIR request needs, for scope enforcement.
 * @param {string} method HTTP method
 * @param {string} fhirPath path below the FHIR base without slashes at either end
 * @param {unknown} [body] parsed body (batch/transaction Bundles are checked entry by entry)
 * @returns {{ type: string, permission: string }[]}
 */
export function requiredPermissions(method, fhirPath, body) {
  const segments = fhirPath.split('/').filter(Boolean);
  if (!segments.length) {
    if (method === 'POST' && body && typeof body === 'object' && Array.isArray(body.entry)) {
      return body.entry.flatMap((entry) => {
        const url = String(entry?.request?.url ?? '').split('?')[0];
        const entryMethod = String(entry?.request?.method ?? 'GET').toUpperCase();
        const path = url.replace(/^\/+|\/+$/g, '');
        const entryBody = entry?.resource;
        return requiredPermissions(entryMethod, path || entryBody?.resourceType || '', entryBody);
      });
    }
    return [{ type: '*', permission: 's' }]; // system-level search / history
  }
  const [type, second, third] = segments;
  const isOperation = [second, third].some((s) => s?.startsWith('$'));
  if (method === 'GET' || method === 'HEAD') {
    const typeLevel = !second || second === '_history';
    return [{ type, permission: typeLevel ? 's' : 'r' }];
  }
  if (method === 'POST') {
    if (second === '_search') {
      return [{ type, permission: 's' }];
    }
    return [{ type, permission: isOperation ? 'r' : 'c' }];
  }
  if (method === 'PUT' || method === 'PATCH') {
    return [{ type, permission: 'u' }];
  }
  if (method === 'DELETE') {
    return [{ type, permission: 'd' }];
  }
  return [{ type, permission: 'r' }];
}
