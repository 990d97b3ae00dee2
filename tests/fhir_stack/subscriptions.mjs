// Topic-based Subscriptions as in the "Subscriptions R5 Backport" IG (R4 flavour), rest-hook only.
//
// A client POSTs an R4 Subscription whose `criteria` is a supported topic canonical, with
// `backport-filter-criteria` extensions on `_criteria` (e.g. "Observation?patient=Patient/123"),
// channel.type rest-hook, channel.endpoint (loopback only), channel.payload application/fhir+json
// with the `backport-payload-content` extension (empty | id-only | full-resource; default id-only)
// and channel.header ("Authorization: Bearer ..."). The server stores it as `requested`, POSTs a
// handshake Bundle and sets `active` (2xx) or `error`; then every matching create/update of the
// topic's resource type is POSTed as a `history` Bundle whose first entry is the
// backport-subscription-status-r4 Parameters. A failed delivery sets `error` (with
// Subscription.error); the next successful one sets `active` again. Event numbers keep counting
// across failures, so a receiver can see what it missed.
import { matchesSearchRequest, notFound, OperationOutcomeError } from '@medplum/core';
import { randomUUID } from 'node:crypto';
import { notSupported, outcome } from './fhir-http.mjs';

const BACKPORT = 'http://hl7.org/fhir/uv/subscriptions-backport';
export const SUBSCRIPTION_PROFILE = `${BACKPORT}/StructureDefinition/backport-subscription`;
const FILTER_CRITERIA = `${BACKPORT}/StructureDefinition/backport-filter-criteria`;
const PAYLOAD_CONTENT = `${BACKPORT}/StructureDefinition/backport-payload-content`;
const CHANNEL_TIMEOUT = `${BACKPORT}/StructureDefinition/backport-timeout`;
const TOPIC_CANONICAL = `${BACKPORT}/StructureDefinition/capabilitystatement-subscriptiontopic-canonical`;
const STATUS_PROFILE = `${BACKPORT}/StructureDefinition/backport-subscription-status-r4`;
const NOTIFICATION_PROFILE = `${BACKPORT}/StructureDefinition/backport-subscription-notification-r4`;
const SERVER_CAPABILITY = `${BACKPORT}/CapabilityStatement/backport-subscription-server-r4`;

/** Supported topics: canonical URL -> the resource type whose creates/updates trigger it. */
export const TOPICS = {
  // "An Observation was created or updated"; filter it by patient (and code, category, ...).
  'http://example.org/fhir/SubscriptionTopic/patient-observation': { resourceType: 'Observation' },
};

const CONTENTS = new Set(['empty', 'id-only', 'full-resource']);
const PAYLOAD_TYPES = new Set(['application/fhir+json', 'application/json']);
const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);
const LIVE_STATES = new Set(['requested', 'active', 'error']);
const RESULT_PARAMS = new Set(['_sort', '_count', '_offset', '_total', '_summary', '_format', '_pretty']);

/** @param {string} text */
function invalid(text) {
  return new OperationOutcomeError(outcome('invalid', `Subscription: ${text}`));
}

export class Subscriptions {
  /**
   * @param {object} options
   * @param {import('./fhir-server.mjs').FhirServer} options.server
   * @param {boolean} options.enabled FHIR_SUBSCRIPTIONS
   * @param {number} options.timeoutMs default delivery timeout (FHIR_SUBSCRIPTION_TIMEOUT_MS)
   */
  constructor(options) {
    this.server = options.server;
    this.repo = options.server.repo;
    this.enabled = options.enabled;
    this.timeoutMs = options.timeoutMs;
    /** @type {Map<string, object>} Subscription id -> runtime state */
    this.states = new Map();
    this.repo.beforeWriteHooks.push((resource) => this.beforeWrite(resource));
    this.repo.afterWriteHooks.push((resource, action) => this.afterWrite(resource, action));
    this.repo.afterDeleteHooks.push((type, id) => type === 'Subscription' && this.states.delete(id));
    this.repo.afterClearHooks.push(() => this.states.clear());
  }

  /** CapabilityStatement.rest.resource entry for Subscription (undefined when disabled). */
  capabilityResource() {
    if (!this.enabled) {
      return undefined;
    }
    return {
      type: 'Subscription',
      supportedProfile: [SUBSCRIPTION_PROFILE],
      extension: Object.keys(TOPICS).map((url) => ({ url: TOPIC_CANONICAL, valueCanonical: url })),
      interaction: ['read', 'search-type', 'create', 'update', 'delete'].map((code) => ({ code })),
      operation: [{ name: 'status', definition: `${BACKPORT}/OperationDefinition/backport-subscription-status` }],
    };
  }

  instantiates() {
    return this.enabled ? [SERVER_CAPABILITY] : [];
  }

  // ------------------------------------------------------------------ validation

  beforeWrite(resource) {
    if (resource.resourceType !== 'Subscription') {
      return;
    }
    if (!this.enabled) {
      throw notSupported('Subscriptions (this server runs with FHIR_SUBSCRIPTIONS=false)');
    }
    this.parse(resource);
    resource.status = resource.status === 'off' ? 'off' : 'requested';
    delete resource.error;
  }

  /**
   * Checks a Subscription and returns what delivery needs; throws a 400 OperationOutcome.
   * @param {object} sub
   */
  parse(sub) {
    const topic = TOPICS[sub.criteria];
    if (!topic) {
      throw notSupported(`Subscription.criteria '${sub.criteria ?? ''}': supported topics are ${Object.keys(TOPICS).join(', ')}`);
    }
    const criteria = (sub._criteria?.extension ?? [])
      .filter((e) => e.url === FILTER_CRITERIA)
      .map((e) => this.parseFilter(topic.resourceType, e.valueString));
    const channel = sub.channel ?? {};
    if (channel.type !== 'rest-hook') {
      throw notSupported(`channel.type '${channel.type ?? ''}' (only rest-hook)`);
    }
    let endpoint;
    try {
      endpoint = new URL(channel.endpoint);
    } catch {
      throw invalid(`channel.endpoint must be an absolute URL, got '${channel.endpoint ?? ''}'`);
    }
    if (!['http:', 'https:'].includes(endpoint.protocol) || !LOOPBACK_HOSTS.has(endpoint.hostname)) {
      throw invalid(`channel.endpoint must be an http(s) URL on loopback (test server), got '${channel.endpoint}'`);
    }
    if (!PAYLOAD_TYPES.has(channel.payload)) {
      throw notSupported(`channel.payload '${channel.payload ?? ''}' (use application/fhir+json)`);
    }
    const contentExt = (channel._payload?.extension ?? []).find((e) => e.url === PAYLOAD_CONTENT);
    const content = contentExt?.valueCode ?? 'id-only';
    if (!CONTENTS.has(content)) {
      throw invalid(`payload content '${content}' (empty, id-only or full-resource)`);
    }
    const headers = {};
    for (const line of channel.header ?? []) {
      const match = /^([A-Za-z0-9!#$%&'*+.^_`|~-]+):\s*(.*)$/.exec(String(line));
      if (!match) {
        throw invalid(`channel.header '${line}' is not "Name: value"`);
      }
      headers[match[1]] = match[2];
    }
    const timeoutExt = (channel.extension ?? []).find((e) => e.url === CHANNEL_TIMEOUT);
    const timeoutMs = timeoutExt?.valueUnsignedInt ? timeoutExt.valueUnsignedInt * 1000 : this.timeoutMs;
    return { topic: sub.criteria, criteria, endpoint: endpoint.href, content, headers, timeoutMs };
  }

  /** "Observation?patient=Patient/123&code=..." -> a Medplum SearchRequest (same rules as search). */
  parseFilter(resourceType, value) {
    const text = String(value ?? '');
    if (!text.startsWith(`${resourceType}?`)) {
      throw invalid(`filter criteria must start with '${resourceType}?', got '${text}'`);
    }
    const pairs = [...new URLSearchParams(text.slice(resourceType.length + 1))];
    for (const [key] of pairs) {
      if (RESULT_PARAMS.has(key.split(':')[0])) {
        throw invalid(`filter criteria cannot use '${key}'`);
      }
    }
    return { resourceType, filters: this.server.planSearch(resourceType, pairs).filters };
  }

  // ------------------------------------------------------------------ events

  afterWrite(resource, action) {
    if (resource.resourceType === 'Subscription') {
      this.start(resource);
      return;
    }
    const timestamp = new Date().toISOString();
    for (const state of this.states.values()) {
      const sub = this.repo.current('Subscription', state.id);
      if (!sub || !LIVE_STATES.has(sub.status) || TOPICS[state.topic].resourceType !== resource.resourceType) {
        continue;
      }
      if (!state.criteria.every((criteria) => matchesSearchRequest(resource, criteria))) {
        continue;
      }
      state.events++;
      const event = { number: state.events, resource, action, timestamp };
      this.enqueue(state, () => this.deliver(state, 'event-notification', event));
    }
  }

  /** (Re)starts a Subscription after a client create/update: new counter, handshake. */
  start(sub) {
    const state = { id: sub.id, events: 0, chain: Promise.resolve(), ...this.parse(sub) };
    this.states.set(sub.id, state);
    if (sub.status === 'requested') {
      this.enqueue(state, () => this.deliver(state, 'handshake'));
    }
  }

  enqueue(state, task) {
    state.chain = state.chain.then(task).catch((err) => this.server.log(`subscription ${state.id}: ${err?.stack ?? err}`));
  }

  /** Sends one notification and records the outcome in Subscription.status / .error. */
  async deliver(state, type, event) {
    const sub = this.repo.current('Subscription', state.id);
    if (!sub || this.states.get(state.id) !== state || !LIVE_STATES.has(sub.status)) {
      return;
    }
    const bundle = this.notification(sub, state, type, event);
    let failure;
    try {
      const response = await fetch(state.endpoint, {
        method: 'POST',
        headers: { ...state.headers, 'Content-Type': 'application/fhir+json' },
        body: JSON.stringify(bundle),
        signal: AbortSignal.timeout(state.timeoutMs),
      });
      await response.arrayBuffer();
      if (!response.ok) {
        failure = `${type} delivery to ${state.endpoint} answered HTTP ${response.status}`;
      }
    } catch (err) {
      failure = `${type} delivery to ${state.endpoint} failed: ${err?.cause?.code ?? err?.name ?? err}`;
    }
    if (failure) {
      this.server.log(`subscription ${state.id}: ${failure}`);
    }
    await this.setStatus(state, failure ? 'error' : 'active', failure);
  }

  async setStatus(state, status, error) {
    const sub = this.repo.current('Subscription', state.id);
    if (!sub || this.states.get(state.id) !== state || !LIVE_STATES.has(sub.status)) {
      return;
    }
    if (sub.status === status && sub.error === error) {
      return;
    }
    const updated = { ...sub, status };
    if (error) {
      updated.error = error;
    } else {
      delete updated.error;
    }
    await this.repo.updateInternal(updated);
  }

  // ------------------------------------------------------------------ documents

  /** The backport-subscription-status-r4 Parameters. */
  statusParameters(sub, state, type, event) {
    const parameter = [
      { name: 'subscription', valueReference: { reference: `${this.server.baseUrl}/Subscription/${sub.id}` } },
    ];
    if (state.content !== 'empty') {
      parameter.push({ name: 'topic', valueCanonical: state.topic });
    }
    parameter.push(
      { name: 'status', valueCode: sub.status },
      { name: 'type', valueCode: type },
      { name: 'events-since-subscription-start', valueString: String(event?.number ?? state.events) }
    );
    if (event) {
      const part = [
        { name: 'event-number', valueString: String(event.number) },
        { name: 'timestamp', valueInstant: event.timestamp },
      ];
      if (state.content !== 'empty') {
        const { resourceType, id } = event.resource;
        part.push({ name: 'focus', valueReference: { reference: `${this.server.baseUrl}/${resourceType}/${id}` } });
      }
      parameter.push({ name: 'notification-event', part });
    }
    return { resourceType: 'Parameters', id: randomUUID(), meta: { profile: [STATUS_PROFILE] }, parameter };
  }

  /** A notification Bundle (type history): status Parameters first, then the focus if full-resource. */
  notification(sub, state, type, event) {
    const subscriptionUrl = `${this.server.baseUrl}/Subscription/${sub.id}`;
    const status = this.statusParameters(sub, state, type, event);
    const entry = [
      {
        fullUrl: `urn:uuid:${status.id}`,
        resource: status,
        request: { method: 'GET', url: `${subscriptionUrl}/$status` },
        response: { status: '200' },
      },
    ];
    if (event && state.content === 'full-resource') {
      const { resourceType, id } = event.resource;
      const created = event.action === 'create';
      entry.push({
        fullUrl: `${this.server.baseUrl}/${resourceType}/${id}`,
        resource: event.resource,
        request: { method: created ? 'POST' : 'PUT', url: created ? resourceType : `${resourceType}/${id}` },
        response: { status: created ? '201' : '200' },
      });
    }
    return {
      resourceType: 'Bundle',
      id: randomUUID(),
      meta: { profile: [NOTIFICATION_PROFILE] },
      type: 'history',
      timestamp: new Date().toISOString(),
      entry,
    };
  }

  /** GET Subscription/{id}/$status: a searchset Bundle with the status Parameters (query-status). */
  async statusBundle(id) {
    if (!this.enabled) {
      throw notSupported('Subscriptions (this server runs with FHIR_SUBSCRIPTIONS=false)');
    }
    const sub = this.repo.current('Subscription', id);
    const state = this.states.get(id);
    if (!sub || !state) {
      throw new OperationOutcomeError(notFound);
    }
    const status = this.statusParameters(sub, state, 'query-status');
    if (sub.error) {
      status.parameter.push({ name: 'error', valueCodeableConcept: { text: sub.error } });
    }
    return {
      resourceType: 'Bundle',
      id: randomUUID(),
      type: 'searchset',
      total: 1,
      entry: [{ fullUrl: `urn:uuid:${status.id}`, resource: status, search: { mode: 'match' } }],
    };
  }
}
