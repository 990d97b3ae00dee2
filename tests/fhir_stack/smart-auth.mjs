// Test-only SMART App Launch 2.x authorization server: oidc-provider (a real, certified OpenID
// Connect / OAuth 2.0 server) plus the SMART parts it lacks: the EHR launch endpoint, launch/aud
// checks, launch context (patient, encounter, need_patient_banner, appContext) in the token
// response, automatic login + consent for a test user, and .well-known/smart-configuration.
import Provider, { errors } from 'oidc-provider';
import { generateKeyPairSync, randomBytes } from 'node:crypto';

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

/** The id of the automatically logged-in test user (a Practitioner). */
export const TEST_USER_ID = 'smart-test-user';

const LAUNCH_TTL_SECONDS = 3600;

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
      ],
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
        Interaction: 600,
        Session: 24 * 3600,
        Grant: 24 * 3600,
      },
      features: {
        devInteractions: { enabled: false },
        introspection: { enabled: true },
        revocation: { enabled: true },
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
      if (ctx.path === '/token' && ctx.method === 'POST' && ctx.status === 200 && ctx.body?.access_token) {
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
   * Validates an access token issued by this server (used by the FHIR server).
   * @param {string} token
   * @returns {Promise<boolean>}
   */
  async validateAccessToken(token) {
    try {
      const at = await this.provider.AccessToken.find(token);
      return Boolean(at) && !at.isExpired;
    } catch {
      return false;
    }
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
      token_endpoint_auth_methods_supported: ['none'],
      grant_types_supported: ['authorization_code', 'refresh_token'],
      response_types_supported: ['code'],
      scopes_supported: this.scopes,
      code_challenge_methods_supported: ['S256'],
      capabilities: [
        'launch-ehr',
        'authorize-post',
        'client-public',
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
