// HTTP and OperationOutcome helpers shared by the test FHIR server's modules.
import { badRequest, OperationOutcomeError } from '@medplum/core';

// ---------------------------------------------------------------------------------------------
// OperationOutcome helpers
// ---------------------------------------------------------------------------------------------

/**
 * @param {string} code FHIR issue-type code
 * @param {string} text human-readable diagnostics
 * @param {string} [severity]
 */
export function outcome(code, text, severity = 'error') {
  return {
    resourceType: 'OperationOutcome',
    issue: [{ severity, code, details: { text }, diagnostics: text }],
  };
}

/** @param {string} text */
export function notSupported(text) {
  return new OperationOutcomeError(outcome('not-supported', `${text} (not supported by the test server)`));
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------------------------------

/** @param {Record<string, string | string[]>} query */
export function appendQuery(query, key, value) {
  const existing = query[key];
  if (existing === undefined) {
    query[key] = value;
  } else if (Array.isArray(existing)) {
    existing.push(value);
  } else {
    query[key] = [existing, value];
  }
}

export function setCors(req, res) {
  res.setHeader('Access-Control-Allow-Origin', '*');
  res.setHeader('Access-Control-Allow-Methods', 'GET, POST, PUT, DELETE, PATCH, OPTIONS');
  const requested = req.headers['access-control-request-headers'];
  res.setHeader(
    'Access-Control-Allow-Headers',
    requested ? String(requested) : 'Authorization, Content-Type, Accept, Prefer, If-Match, If-None-Exist'
  );
  res.setHeader(
    'Access-Control-Expose-Headers',
    'Location, ETag, Last-Modified, Content-Location, WWW-Authenticate, X-Progress, Retry-After'
  );
}

/**
 * Reads and parses a request body: JSON (FHIR) or application/x-www-form-urlencoded.
 * @returns {Promise<unknown>}
 */
export async function readBody(req, limitBytes = 512 * 1024 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limitBytes) {
      throw new OperationOutcomeError(badRequest('Request body too large'));
    }
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (!text) {
    return undefined;
  }
  const type = String(req.headers['content-type'] ?? '');
  if (type.includes('application/x-www-form-urlencoded')) {
    const form = {};
    for (const [k, v] of new URLSearchParams(text)) {
      appendQuery(form, k, v);
    }
    return form;
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new OperationOutcomeError(outcome('structure', `Request body is not valid JSON: ${err.message}`));
  }
}

export function sendJson(res, status, body, contentType = 'application/json; charset=utf-8', pretty = false) {
  const text = pretty ? JSON.stringify(body, null, 2) : JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': contentType, 'Cache-Control': 'no-store' });
  res.end(text);
}

/** Sends a FHIR JSON body; `?_pretty=true` on `url` indents it. */
export function sendFhir(res, status, body, url) {
  const pretty = url?.searchParams.get('_pretty') === 'true';
  sendJson(res, status, body, 'application/fhir+json; charset=utf-8', pretty);
}
