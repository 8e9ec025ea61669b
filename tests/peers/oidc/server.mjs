// A real OpenID Connect provider (the `oidc-provider` package) for crmctl's MSAL tests.
//
// Why a real provider: MSAL's behaviour that matters on cutover night (discovery, client
// assertions, device-code polling, refresh tokens, error answers) can only be trusted when it
// has met a real authorization server. This one speaks HTTPS with a certificate issued by a CA
// the test made, exactly as MSAL meets Entra ID, only on 127.0.0.1.
//
// Usage: node server.mjs CONFIG.json
//   CONFIG: {
//     "tls": {"key": "server.key path", "cert": "server.crt path"},
//     "tenant": "tenant-1",                      issuer = https://127.0.0.1:PORT/tenant-1
//     "resources": ["https://org.example"],      resource servers (Dataverse-style org origins)
//     "secretClient": {"id", "secret"},          client_credentials + client_secret_post
//     "certClient": {"id", "certificate": PEM},  client_credentials + private_key_jwt
//     "deviceClient": {"id"},                    public client: device code + refresh_token
//     "accessTokenTTL": 3600, "deviceAccessTokenTTL": 60, "pollInterval": 1,
//     "readyFile": path                          written with {"issuer", "port"} once listening
//   }
// Exits when stdin closes (the test process died) or on SIGTERM. Its console output (the
// provider's development warnings) goes wherever the test sends it.
//
// Scope -> audience mapping (Dataverse style). MSAL asks for `https://org.example/.default`
// (app-only) or `https://org.example/user_impersonation` (device code) and sends no `resource`
// parameter, as with Entra ID. The provider's resource indicators feature picks the resource
// from the requested scopes: the origin of the first scope that is a URL under a configured
// resource. Access tokens for it are JWTs with `aud` = that origin and `scope` = the granted
// scopes, signed with the provider's key (published at jwks_uri), so a resource server can
// verify them as Dataverse verifies Entra's.

import { createPublicKey, X509Certificate } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:https';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const resources = new Set(config.resources);
const resourceScopes = (origin) => `${origin}/.default ${origin}/user_impersonation`;

/** The resource (org origin) a request's scopes name, or undefined. */
function resourceFromScope(scope) {
  for (const value of String(scope || '').split(' ')) {
    try {
      const { origin } = new URL(value);
      if (resources.has(origin)) return origin;
    } catch {
      // not a URL: an OIDC scope such as openid or offline_access
    }
  }
  return undefined;
}

function certClientJwks(pem) {
  const cert = new X509Certificate(pem);
  const jwk = createPublicKey(pem).export({ format: 'jwk' });
  // x5c lets the provider match MSAL's x5t / x5t#S256 headers to this key.
  return { keys: [{ ...jwk, use: 'sig', x5c: [cert.raw.toString('base64')] }] };
}

const tls = { key: readFileSync(config.tls.key), cert: readFileSync(config.tls.cert) };
const server = createServer(tls);
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const { port } = server.address();
const prefix = `/${config.tenant}`;
const issuer = `https://127.0.0.1:${port}${prefix}`;

const clients = [
  {
    client_id: config.secretClient.id,
    client_secret: config.secretClient.secret,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_post',
  },
  {
    client_id: config.certClient.id,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'private_key_jwt',
    jwks: certClientJwks(config.certClient.certificate),
  },
  {
    client_id: config.deviceClient.id,
    application_type: 'native',
    grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'none',
  },
];

const provider = new Provider(issuer, {
  clients,
  scopes: ['openid', 'offline_access', 'profile', 'email'],
  claims: { profile: ['name', 'preferred_username'], email: ['email'] },
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return { sub, name: sub, preferred_username: `${sub}@example.test`, email: `${sub}@example.test` };
      },
    };
  },
  features: {
    devInteractions: { enabled: true }, // the sign-in pages a person (here: the test) fills in
    clientCredentials: { enabled: true },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      async defaultResource(ctx, client, oneOf) {
        if (oneOf) return oneOf;
        return resourceFromScope(ctx.oidc.params?.scope) ?? undefined;
      },
      async useGrantedResource() {
        return true; // a refresh keeps the audience of the original grant
      },
      async getResourceServerInfo(ctx, resourceIndicator, client) {
        if (!resources.has(resourceIndicator)) {
          throw new Provider.errors.InvalidTarget(`unknown resource ${resourceIndicator}`);
        }
        const ttl = client.clientId === config.deviceClient.id ? config.deviceAccessTokenTTL : config.accessTokenTTL;
        return {
          scope: resourceScopes(resourceIndicator),
          audience: resourceIndicator,
          accessTokenTTL: ttl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  async issueRefreshToken(ctx, client, code) {
    return client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access');
  },
  ttl: {
    // The resource server's TTL (getResourceServerInfo above) decides; given as functions so the
    // provider does not print its "default ttl" notices.
    AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL || config.accessTokenTTL,
    ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL || config.accessTokenTTL,
    DeviceCode: 600,
    RefreshToken: 3600,
    Grant: 3600,
    Session: 3600,
    Interaction: 600,
    IdToken: 3600,
  },
  pkce: { required: () => false },
});

// RFC 8628 lets the server choose the polling interval (default 5 s); 1 s keeps tests fast.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === '/device/auth' && ctx.status === 200 && ctx.body && typeof ctx.body === 'object') {
    ctx.body = { ...ctx.body, interval: config.pollInterval };
  }
});

// Grants issued, by type: the tests read them to prove a refresh (not a new sign-in) happened.
const grants = {};
provider.on('grant.success', (ctx) => {
  const type = ctx.oidc.params.grant_type;
  grants[type] = (grants[type] || 0) + 1;
});

const callback = provider.callback();
server.on('request', (req, res) => {
  if (req.url === '/_stats') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ grants }));
    return;
  }
  if (req.url !== prefix && !req.url.startsWith(`${prefix}/`)) {
    res.writeHead(404).end();
    return;
  }
  // Mounted under the tenant path, as Express would mount it: oidc-provider derives its own
  // URLs from originalUrl minus url.
  req.originalUrl = req.url;
  req.url = req.url.slice(prefix.length) || '/';
  callback(req, res);
});

// Atomic: the test polls for the file and must never read half of it.
writeFileSync(`${config.readyFile}.tmp`, JSON.stringify({ issuer, port }));
renameSync(`${config.readyFile}.tmp`, config.readyFile);
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
