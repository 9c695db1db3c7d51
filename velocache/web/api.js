// The admin API as the page calls it: the session cookie authenticates (it is HttpOnly: the
// page never sees it); the CSRF token from the login answer is kept in memory only and sent as
// `X-CSRF-Token` on every request that is not a GET.

export const session = { role: null, csrf: null };

/** Listeners called when the server says the session is gone (401). */
const onLogout = new Set();
export function whenLoggedOut(fn) {
  onLogout.add(fn);
}

/** An API error: HTTP status, the API's `kind` and its message. */
export class ApiError extends Error {
  constructor(status, kind, message) {
    super(message);
    this.status = status;
    this.kind = kind;
  }
}

async function request(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && session.csrf) headers['X-CSRF-Token'] = session.csrf;
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, 'network', `cannot reach the gateway: ${e.message}`);
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    const kind = (data && data.kind) || 'failed';
    const message = (data && data.error) || `${method} ${path}: HTTP ${res.status}`;
    if (res.status === 401 && !path.startsWith('/web/login')) {
      session.role = null;
      session.csrf = null;
      for (const fn of onLogout) fn();
    }
    throw new ApiError(res.status, kind, message);
  }
  return data;
}

export const get = (path) => request('GET', path);
export const post = (path, body) => request('POST', path, body === undefined ? {} : body);

/** Whether the session may change things (rules, cache, captures). */
export const canWrite = () => session.role === 'admin';

/** Log in with a token; fills `session`. */
export async function login(token) {
  const r = await request('POST', '/web/login', { token });
  session.role = r.role;
  session.csrf = r.csrf;
  return r;
}

/** Resume a session the cookie still holds (a page reload). */
export async function resume() {
  try {
    const r = await request('GET', '/web/session');
    session.role = r.role;
    session.csrf = r.csrf;
    return true;
  } catch {
    return false;
  }
}

export async function logout() {
  try {
    await request('POST', '/web/logout', {});
  } finally {
    session.role = null;
    session.csrf = null;
  }
}
