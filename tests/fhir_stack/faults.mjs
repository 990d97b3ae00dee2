// Test-only fault injection (STACK_ADMIN=true): make the next N matching requests slow, fail with
// an HTTP error, or lose their connection, so a client's retry / re-authentication / fallback paths
// can be tested against the real servers.
//
//   POST   /_admin/faults          {"path_prefix": "/fhir/Observation", "status": 503, "delay_ms": 0,
//                                   "count": 1, "method": "GET", "server": "fhir" | "auth",
//                                   "retry_after_s": 2, "reset_connection": false}   (or an array)
//   GET    /_admin/faults          the faults with their remaining counts and hits
//   DELETE /_admin/faults          removes all faults
import { outcome, sendJson, setCors } from './fhir-http.mjs';

const SERVERS = new Set(['fhir', 'auth']);
const ISSUE_CODES = { 401: 'login', 403: 'forbidden', 404: 'not-found', 429: 'throttled', 503: 'transient' };
const OAUTH_ERRORS = { 400: 'invalid_request', 401: 'invalid_client', 403: 'access_denied', 503: 'temporarily_unavailable' };

/** @param {unknown} value @param {string} name @param {number} fallback */
function nonNegativeInt(value, name, fallback) {
  if (value === undefined || value === null) {
    return fallback;
  }
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new Error(`${name} must be a non-negative integer`);
  }
  return value;
}

export class Faults {
  constructor() {
    /** @type {object[]} */
    this.faults = [];
    this.nextId = 1;
  }

  /**
   * Validates and adds one fault; returns its public form.
   * @param {Record<string, unknown>} spec
   */
  add(spec) {
    if (!spec || typeof spec !== 'object' || Array.isArray(spec)) {
      throw new Error('a fault is a JSON object');
    }
    const known = ['path_prefix', 'status', 'delay_ms', 'count', 'method', 'server', 'retry_after_s', 'reset_connection'];
    const unknown = Object.keys(spec).filter((k) => !known.includes(k));
    if (unknown.length) {
      throw new Error(`unknown fault fields: ${unknown.join(', ')}`);
    }
    const pathPrefix = spec.path_prefix;
    if (typeof pathPrefix !== 'string' || !pathPrefix.startsWith('/')) {
      throw new Error('path_prefix is required and must start with "/"');
    }
    const status = spec.status === undefined || spec.status === null ? undefined : spec.status;
    if (status !== undefined && !(Number.isInteger(status) && status >= 400 && status <= 599)) {
      throw new Error('status must be an HTTP error status (400-599)');
    }
    const server = spec.server ?? 'fhir';
    if (!SERVERS.has(server)) {
      throw new Error('server must be "fhir" or "auth"');
    }
    const fault = {
      id: this.nextId++,
      pathPrefix,
      status,
      delayMs: nonNegativeInt(spec.delay_ms, 'delay_ms', 0),
      remaining: nonNegativeInt(spec.count, 'count', 1),
      method: spec.method === undefined ? undefined : String(spec.method).toUpperCase(),
      server,
      retryAfterS: spec.retry_after_s === undefined ? undefined : nonNegativeInt(spec.retry_after_s, 'retry_after_s', 0),
      resetConnection: Boolean(spec.reset_connection),
      hits: 0,
    };
    if (!fault.status && !fault.delayMs && !fault.resetConnection) {
      throw new Error('a fault needs status, delay_ms or reset_connection');
    }
    this.faults.push(fault);
    return publicForm(fault);
  }

  list() {
    return this.faults.map(publicForm);
  }

  clear() {
    const count = this.faults.length;
    this.faults = [];
    return count;
  }

  /**
   * Applies the first matching fault with requests left. Returns true when the fault answered
   * (or dropped) the request, false when the request should be handled normally (no fault, or a
   * delay-only fault).
   * @param {'fhir' | 'auth'} server
   */
  async apply(server, req, res) {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (path.startsWith('/_admin/') || req.method === 'OPTIONS') {
      return false;
    }
    const fault = this.faults.find(
      (f) =>
        f.remaining > 0 && f.server === server && path.startsWith(f.pathPrefix) && (!f.method || f.method === req.method)
    );
    if (!fault) {
      return false;
    }
    fault.remaining--;
    fault.hits++;
    if (fault.delayMs) {
      await new Promise((resolve) => setTimeout(resolve, fault.delayMs));
    }
    if (fault.resetConnection) {
      req.socket.destroy();
      return true;
    }
    if (!fault.status) {
      return false;
    }
    if (fault.retryAfterS !== undefined) {
      res.setHeader('Retry-After', String(fault.retryAfterS));
    }
    const text = `Injected fault ${fault.id}: HTTP ${fault.status}`;
    if (server === 'auth') {
      const error = OAUTH_ERRORS[fault.status] ?? 'server_error';
      sendJson(res, fault.status, { error, error_description: text });
      return true;
    }
    setCors(req, res);
    if (fault.status === 401) {
      res.setHeader('WWW-Authenticate', `Bearer realm="fhir", error="invalid_token", error_description="${text}"`);
    }
    const code = ISSUE_CODES[fault.status] ?? (fault.status >= 500 ? 'exception' : 'processing');
    sendJson(res, fault.status, outcome(code, text), 'application/fhir+json; charset=utf-8');
    return true;
  }
}

function publicForm(fault) {
  return {
    id: fault.id,
    path_prefix: fault.pathPrefix,
    status: fault.status ?? null,
    delay_ms: fault.delayMs,
    remaining: fault.remaining,
    method: fault.method ?? null,
    server: fault.server,
    retry_after_s: fault.retryAfterS ?? null,
    reset_connection: fault.resetConnection,
    hits: fault.hits,
  };
}
