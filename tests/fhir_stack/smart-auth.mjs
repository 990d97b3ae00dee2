// Test-only SMART App Launch 2.x authorization server: oidc-provider (a real, certified OpenID
// Connect / OAuth 2.0 server) plus the SMART parts it lacks: the EHR launch endpoint, launch/aud
// checks, launch context (patient, encounter, need_patient_banner, appContext) in the token
// response, automatic login + consent for a test user, and .well-known/smart-configuration.
// SMART Backend Services (client_credentials + private_key_jwt) use oidc-provider's own grant and
// client authentication; backend-auth.mjs decides the system scopes and checks the SMART claims.
import Provider, { errors } from 'oidc-provider';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { BACKEND_SIGNING_ALGS, grantSystemScopes, MAX_ASSERTION_LIFETIME_S } from './backend-auth.mjs';

/** Resource types that get patient/user .read/.rs/.r/.s scopes. */
const SCOPED_RESOURCE_TYPES = [
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
  'AllergyIntolerance',
  'Practitioner',
];

/**
 * Every scope the server grants. oidc-provider silently drops requested scopes that are not listed.
 * @param {string[]} extra additional scopes (SMART_EXTRA_SCOPES)
 */
export function smartScopes(extra = []) {
  const scopes = [
    'openid',
    'fhirUser',
    'profile',
    'launch',
    'launch/patient',
    'launch/encounter',
    'online_access',
    'offline_access',
  ];
  for (const context of ['patient', 'user']) {
    for (const type of ['*', ...SCOPED_RESOURCE_TYPES]) {
      for (const permission of ['read', 'rs', 'r', 's']) {
        scopes.push(`${context}/${type}.${permission}`);
      }
    }
  }
  return [...new Set([...scopes, ...extra])];
}

/** Examples of the system scopes backend clients may request (for scopes_supported). */
export function systemScopeExamples() {
  const scopes = [];
  for (const type of ['*', ...SCOPED_RESOURCE_TYPES, 'Communication', 'Subscription']) {
    scopes.push(`system/${type}.read`, `system/${type}.write`, `system/${type}.rs`, `system/${type}.cud`);
  }
  scopes.push('system/*.*', 'system/*.cruds');
  return scopes;
}

/** @param {string | URL} url */
function isLoopbackUrl(url) {
  const { hostname } = new URL(url);
  return hostname === 'localhost' || hostname === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

/** The id of the automatically logged-in test user (a Practitioner). */
export const TEST_USER_ID = 'smart-test-user';

const LAUNCH_TTL_SECONDS = 3600;
/** oidc-provider's default clock tolerance, also allowed on the 5-minute assertion lifetime. */
const CLOCK_TOLERANCE_S = 15;

/** @param {string} s */
function htmlEscape(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export class SmartAuth {
  /**
   * @param {object} options
   * @param {string} options.issuer auth server origin, e.g. http://127.0.0.1:8091
   * @param {string} options.fhirBase the FHIR base URL (iss of launches, required aud)
   * @param {string} options.clientId public client id
   * @param {string[]} options.redirectUris exact redirect URIs of the client
   * @param {number} options.tokenTtl access token lifetime in seconds
   * @param {string[]} options.denyPatients launches for these patients end in access_denied
   * @param {string[]} [options.extraScopes]
   * @param {{ clientId: string, jwks?: object, jwksUri?: string, scopes: string[] }[]} [options.backendClients]
   *   SMART Backend Services clients (SMART_BACKEND_CLIENTS)
   * @param {number} [options.backendTokenTtl] backend access-token lifetime in seconds
   * @param {(msg: string) => void} [options.log]
   */
  constructor(options) {
    this.issuer = options.issuer.replace(/\/$/, '');
    this.fhirBase = options.fhirBase.replace(/\/$/, '');
    this.clientId = options.clientId;
    this.redirectUris = options.redirectUris;
    this.tokenTtl = options.tokenTtl;
    this.denyPatients = new Set(options.denyPatients);
    this.scopes = smartScopes(options.extraScopes ?? []);
    this.tokenEndpoint = `${this.issuer}/token`;
    this.backendClients = new Map((options.backendClients ?? []).map((c) => [c.clientId, c]));
    this.backendTokenTtl = options.backendTokenTtl ?? 300;
    /** @type {Set<string>} backend access tokens issued so far (for revokeBackendTokens) */
    this.backendTokens = new Set();
    this.log = options.log ?? (() => undefined);
    /** @type {Map<string, {patient: string, encounter?: string, appContext?: string, needPatientBanner: boolean, deny: boolean, expires: number}>} */
    this.launches = new Map();
    /** @type {Map<string, object>} grantId -> launch context */
    this.grantContext = new Map();
    this.redirectOrigins = new Set(
      options.redirectUris.flatMap((u) => {
        try {
          return [new URL(u).origin];
        } catch {
          return [];
        }
      })
    );
    this.provider = this.createProvider();
    this.providerCallback = this.provider.callback();
  }

  createProvider() {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jwk = { ...privateKey.export({ format: 'jwk' }), kid: randomBytes(8).toString('hex'), use: 'sig', alg: 'RS256' };
    const smart = this;
    const provider = new Provider(this.issuer, {
      clients: [
        {
          client_id: this.clientId,
          token_endpoint_auth_method: 'none',
          redirect_uris: this.redirectUris,
          grant_types: ['authorization_code', 'refresh_token'],
          response_types: ['code'],
          application_type: 'web',
        },
        ...[...this.backendClients.values()].map((c) => ({
          client_id: c.clientId,
          token_endpoint_auth_method: 'private_key_jwt',
          grant_types: ['client_credentials'],
          response_types: [],
          redirect_uris: [],
          ...(c.jwks ? { jwks: c.jwks } : { jwks_uri: c.jwksUri }),
        })),
      ],
      clientAuthMethods: ['none', 'private_key_jwt'],
      enabledJWA: { clientAuthSigningAlgValues: [...BACKEND_SIGNING_ALGS] },
      // oidc-provider refuses to fetch from special-use addresses (SSRF protection); this test
      // server must fetch backend clients' jwks_uri on loopback, so loopback URLs skip that check.
      fetch: (url, options) => {
        const { dispatcher, ...rest } = options;
        return globalThis.fetch(url, isLoopbackUrl(url) ? rest : { ...rest, dispatcher });
      },
      assertJwtClientAuthClaimsAndHeader: (ctx, claims, header, client) =>
        this.checkClientAssertion(claims, header, client),
      jwks: { keys: [jwk] },
      cookies: { keys: [randomBytes(32).toString('hex')] },
      scopes: this.scopes,
      claims: {
        openid: ['sub'],
        fhirUser: ['fhirUser'],
        profile: ['name'],
      },
      conformIdTokenClaims: false,
      pkce: { required: () => true },
      responseTypes: ['code'],
      ttl: {
        AccessToken: this.tokenTtl,
        AuthorizationCode: 60,
        IdToken: 3600,
        RefreshToken: 24 * 3600,
        ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL ?? this.backendTokenTtl,
        Interaction: 600,
        Session: 24 * 3600,
        Grant: 24 * 3600,
      },
      features: {
        devInteractions: { enabled: false },
        introspection: { enabled: true },
        revocation: { enabled: true },
        clientCredentials: { enabled: true },
        resourceIndicators: {
          enabled: true,
          // Backend tokens are for the FHIR server (their aud); launch tokens stay as they were.
          defaultResource: async (ctx, client, oneOf) =>
            oneOf ?? (this.backendClients.has(client?.clientId) ? this.fhirBase : undefined),
          useGrantedResource: async () => false,
          getResourceServerInfo: async (ctx, resource, client) => this.resourceServerInfo(ctx, resource, client),
        },
      },
      extraParams: {
        async launch(ctx, value) {
          if (value !== undefined && !smart.findLaunch(value)) {
            throw new errors.InvalidRequest('unknown or expired launch parameter');
          }
        },
        async aud(ctx, value) {
          if (value === undefined) {
            throw new errors.InvalidRequest('aud parameter is required (the FHIR base URL)');
          }
          if (value.replace(/\/$/, '') !== smart.fhirBase) {
            throw new errors.InvalidRequest(`aud must be ${smart.fhirBase}`);
          }
        },
      },
      interactions: {
        url: (ctx, interaction) => `/interaction/${interaction.uid}`,
      },
      async findAccount(ctx, id) {
        return {
          accountId: id,
          async claims() {
            return { sub: id, fhirUser: `${smart.fhirBase}/Practitioner/${id}`, name: 'SMART Test User' };
          },
        };
      },
      async issueRefreshToken(ctx, client, code) {
        return (
          client.grantTypeAllowed('refresh_token') &&
          (code.scopes.has('offline_access') || code.scopes.has('online_access'))
        );
      },
      clientBasedCORS(ctx, origin) {
        return smart.redirectOrigins.has(origin);
      },
      async renderError(ctx, out) {
        ctx.type = 'html';
        ctx.body = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Authorization error</title></head><body><h1>Authorization error</h1>${Object.entries(
          out
        )
          .map(([k, v]) => `<p><strong>${htmlEscape(k)}</strong>: <span id="${htmlEscape(k)}">${htmlEscape(v)}</span></p>`)
          .join('')}</body></html>`;
      },
    });
    provider.proxy = false;
    // Add the SMART launch context to token responses (authorization_code and refresh_token).
    provider.use(async (ctx, next) => {
      await next();
      if (ctx.path === '/token' && ctx.method === 'POST' && ctx.body?.error && ctx.state.errorDetail) {
        // Test server: say why (e.g. "client assertion tokens must only be used once").
        ctx.body = { ...ctx.body, error_description: `${ctx.body.error_description}: ${ctx.state.errorDetail}` };
      }
      if (ctx.path === '/token' && ctx.method === 'POST' && ctx.status === 200 && ctx.body?.access_token) {
        if (ctx.oidc?.params?.grant_type === 'client_credentials') {
          this.backendTokens.add(ctx.body.access_token);
          ctx.body.token_type = 'bearer'; // as in the SMART Backend Services examples (case-insensitive)
          return;
        }
        const token = await provider.AccessToken.find(ctx.body.access_token);
        const context = token ? this.grantContext.get(token.grantId) : undefined;
        if (context) {
          ctx.body.patient = context.patient;
          if (context.encounter) {
            ctx.body.encounter = context.encounter;
          }
          ctx.body.need_patient_banner = context.needPatientBanner;
          if (context.appContext !== undefined) {
            ctx.body.appContext = context.appContext;
          }
        }
      }
    });
    provider.on('server_error', (ctx, err) => this.log(`oidc server_error: ${err?.stack ?? err}`));
    provider.on('grant.error', (ctx, err) => {
      ctx.state.errorDetail = err?.error_detail;
      this.log(`token error for client ${ctx.oidc?.client?.clientId ?? '?'}: ${err?.message} ${err?.error_detail ?? ''}`);
    });
    return provider;
  }

  /** @param {string} launch */
  findLaunch(launch) {
    const ctx = this.launches.get(launch);
    if (!ctx || ctx.expires < Date.now()) {
      return undefined;
    }
    return ctx;
  }

  /**
   * SMART Backend Services checks oidc-provider leaves to the deployment (it has already checked
   * iss, aud against its own endpoints, exp presence, jti presence and the signature; it checks
   * jti reuse right after this).
   */
  checkClientAssertion(claims, header, client) {
    if (!this.backendClients.has(client.clientId)) {
      return;
    }
    const fail = (detail) => {
      throw new errors.InvalidClientAuth(detail);
    };
    if (claims.sub !== client.clientId) {
      fail('sub must equal the client_id');
    }
    if (![].concat(claims.aud).includes(this.tokenEndpoint)) {
      fail(`aud must be the token endpoint URL ${this.tokenEndpoint}`);
    }
    const now = Math.floor(Date.now() / 1000);
    if (claims.exp > now + MAX_ASSERTION_LIFETIME_S + CLOCK_TOLERANCE_S) {
      fail(`exp must be at most ${MAX_ASSERTION_LIFETIME_S} s in the future`);
    }
    if (!header.kid) {
      fail('the kid header is required');
    }
    if (header.typ !== undefined && header.typ !== 'JWT') {
      fail('the typ header must be JWT');
    }
  }

  /** oidc-provider resource server info for a backend client's client_credentials request. */
  resourceServerInfo(ctx, resource, client) {
    const backend = this.backendClients.get(client?.clientId);
    if (!backend || resource.replace(/\/$/, '') !== this.fhirBase) {
      throw new errors.InvalidTarget(`the only resource is ${this.fhirBase} (for backend clients)`);
    }
    const result = grantSystemScopes(ctx.oidc.params.scope, backend.scopes);
    if (result.error) {
      throw new errors.InvalidScope(result.error, ctx.oidc.params.scope);
    }
    return {
      scope: result.granted.join(' '),
      audience: this.fhirBase,
      accessTokenFormat: 'opaque',
      accessTokenTTL: this.backendTokenTtl,
    };
  }

  /**
   * Resolves an access token issued by this server (used by the FHIR server).
   * @param {string} token
   * @returns {Promise<{ kind: 'smart' | 'backend', clientId: string, scopes: string[] } | undefined>}
   */
  async resolveAccessToken(token) {
    for (const [kind, model] of [
      ['smart', this.provider.AccessToken],
      ['backend', this.provider.ClientCredentials],
    ]) {
      let found;
      try {
        found = await model.find(token);
      } catch {
        found = undefined;
      }
      if (found && !found.isExpired) {
        return { kind, clientId: found.clientId, scopes: String(found.scope ?? '').split(' ').filter(Boolean) };
      }
    }
    return undefined;
  }

  /**
   * Validates an access token issued by this server.
   * @param {string} token
   * @returns {Promise<boolean>}
   */
  async validateAccessToken(token) {
    return Boolean(await this.resolveAccessToken(token));
  }

  /** Invalidates every backend access token issued so far; returns how many were still valid. */
  async revokeBackendTokens() {
    let revoked = 0;
    for (const value of this.backendTokens) {
      const token = await this.provider.ClientCredentials.find(value).catch(() => undefined);
      if (token) {
        await token.destroy();
        revoked++;
      }
    }
    this.backendTokens.clear();
    return revoked;
  }

  /** The .well-known/smart-configuration document. */
  smartConfiguration() {
    return {
      issuer: this.issuer,
      jwks_uri: `${this.issuer}/jwks`,
      authorization_endpoint: `${this.issuer}/auth`,
      token_endpoint: `${this.issuer}/token`,
      userinfo_endpoint: `${this.issuer}/me`,
      introspection_endpoint: `${this.issuer}/token/introspection`,
      revocation_endpoint: `${this.issuer}/token/revocation`,
      token_endpoint_auth_methods_supported: ['none', 'private_key_jwt'],
      token_endpoint_auth_signing_alg_values_supported: BACKEND_SIGNING_ALGS,
      grant_types_supported: ['authorization_code', 'refresh_token', 'client_credentials'],
      response_types_supported: ['code'],
      scopes_supported: [...this.scopes, ...systemScopeExamples()],
      code_challenge_methods_supported: ['S256'],
      capabilities: [
        'launch-ehr',
        'authorize-post',
        'client-public',
        'client-confidential-asymmetric',
        'context-ehr-patient',
        'context-ehr-encounter',
        'context-banner',
        'sso-openid-connect',
        'permission-offline',
        'permission-online',
        'permission-patient',
        'permission-user',
        'permission-v1',
        'permission-v2',
      ],
    };
  }

  /**
   * GET /ehr/launch?patient=..&launch_uri=..[&encounter=..][&app_context=..][&need_patient_banner=false][&deny=1]
   * Creates a launch context and redirects to launch_uri with iss and launch.
   */
  ehrLaunch(res, url) {
    const patient = url.searchParams.get('patient');
    const launchUri = url.searchParams.get('launch_uri');
    let target;
    try {
      target = launchUri ? new URL(launchUri) : undefined;
    } catch {
      target = undefined;
    }
    if (!patient || !target || !['http:', 'https:'].includes(target.protocol)) {
      res.writeHead(400, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end('ehr/launch needs ?patient=<id>&launch_uri=<absolute http(s) URL>');
      return;
    }
    const deny = ['1', 'true', 'yes'].includes(url.searchParams.get('deny') ?? '');
    const launch = randomBytes(16).toString('base64url');
    this.launches.set(launch, {
      patient,
      encounter: url.searchParams.get('encounter') ?? undefined,
      appContext: url.searchParams.get('app_context') ?? undefined,
      needPatientBanner: url.searchParams.get('need_patient_banner') !== 'false',
      deny: deny || this.denyPatients.has(patient),
      expires: Date.now() + LAUNCH_TTL_SECONDS * 1000,
    });
    target.searchParams.set('iss', this.fhirBase);
    target.searchParams.set('launch', launch);
    res.writeHead(302, { Location: target.toString(), 'Cache-Control': 'no-store' });
    res.end();
  }

  /** Automatic login and consent for the test user. */
  async interaction(req, res) {
    const details = await this.provider.interactionDetails(req, res);
    const { params, prompt } = details;
    const launch = params.launch ? this.findLaunch(params.launch) : undefined;
    if (launch?.deny) {
      await this.provider.interactionFinished(
        req,
        res,
        { error: 'access_denied', error_description: 'The user denied the authorization request' },
        { mergeWithLastSubmission: false }
      );
      return;
    }
    const accountId = details.session?.accountId ?? TEST_USER_ID;
    const grant = details.grantId
      ? await this.provider.Grant.find(details.grantId)
      : new this.provider.Grant({ accountId, clientId: params.client_id });
    const requested = String(params.scope ?? '')
      .split(' ')
      .filter((s) => this.scopes.includes(s));
    grant.addOIDCScope(requested.join(' '));
    if (prompt.details?.missingOIDCClaims?.length) {
      grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    }
    const grantId = await grant.save();
    if (launch) {
      this.grantContext.set(grantId, {
        patient: launch.patient,
        encounter: launch.encounter,
        appContext: launch.appContext,
        needPatientBanner: launch.needPatientBanner,
      });
    }
    const result = { consent: { grantId } };
    if (prompt.name === 'login' || !details.session) {
      result.login = { accountId };
    }
    await this.provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
  }

  /**
   * Handles one HTTP request on the auth port.
   * @param {import('node:http').IncomingMessage} req
   * @param {import('node:http').ServerResponse} res
   * @param {(req: any) => Promise<unknown>} readBody
   */
  async handle(req, res, readBody) {
    const url = new URL(req.url ?? '/', this.issuer);
    if (req.method === 'GET' && url.pathname === '/ehr/launch') {
      this.ehrLaunch(res, url);
      return;
    }
    if (req.method === 'GET' && url.pathname === '/.well-known/smart-configuration') {
      res.writeHead(200, {
        'Content-Type': 'application/json; charset=utf-8',
        'Access-Control-Allow-Origin': '*',
        'Cache-Control': 'no-store',
      });
      res.end(JSON.stringify(this.smartConfiguration()));
      return;
    }
    if (url.pathname.startsWith('/interaction/')) {
      await this.interaction(req, res);
      return;
    }
    if (url.pathname === '/auth' && req.method === 'POST') {
      // SMART "authorize-post": oidc-provider only serves GET here, so a form POST becomes a GET.
      const form = await readBody(req);
      const qs = new URLSearchParams(url.search);
      for (const [k, v] of Object.entries(form ?? {})) {
        for (const item of Array.isArray(v) ? v : [v]) {
          qs.append(k, String(item));
        }
      }
      req.method = 'GET';
      req.url = `/auth?${qs.toString()}`;
      delete req.headers['content-length'];
      delete req.headers['content-type'];
      this.rewriteAuthorize(req);
      this.providerCallback(req, res);
      return;
    }
    if (url.pathname === '/auth' && req.method === 'GET') {
      this.rewriteAuthorize(req);
    }
    this.providerCallback(req, res);
  }

  /**
   * OIDC drops offline_access unless prompt=consent is present; SMART apps rely on it for refresh
   * tokens, so add prompt=consent when offline_access is requested.
   */
  rewriteAuthorize(req) {
    const url = new URL(req.url ?? '/', this.issuer);
    const scope = url.searchParams.get('scope') ?? '';
    const prompt = url.searchParams.get('prompt') ?? '';
    if (scope.split(' ').includes('offline_access') && !prompt.split(' ').includes('consent')) {
      url.searchParams.set('prompt', prompt ? `${prompt} consent` : 'consent');
      req.url = url.pathname + url.search;
    }
  }
}
