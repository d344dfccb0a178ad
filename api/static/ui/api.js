// Calls to crewq's API with the key the person signed in with (kept in sessionStorage: gone
// when the tab closes), and crewq's one error shape turned into an ApiError.

const KEY = "crewq.apiKey";
const TOKEN = "crewq.debugToken";

export const session = {
  key: () => sessionStorage.getItem(KEY),
  setKey: (key) => sessionStorage.setItem(KEY, key),
  token: () => sessionStorage.getItem(TOKEN),
  setToken: (token) => sessionStorage.setItem(TOKEN, token),
  clear: () => {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(TOKEN);
  },
};

export class ApiError extends Error {
  constructor(status, code, message, requestId, details = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.requestId = requestId;
    this.details = details;
  }

  describe() {
    const id = this.requestId ? ` (request ${this.requestId})` : "";
    return `${this.code}: ${this.message}${id}`;
  }
}

// Any error as one line for a person: crewq's code, message and request id when the API
// refused, else the error's own text.
export function describe(err) {
  return err instanceof ApiError ? err.describe() : String(err);
}

export function authHeaders(key = session.key()) {
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy's page, or a hidden route's bare 404
  }
  const error = body && body.error;
  if (error) {
    return new ApiError(response.status, error.code, error.message, error.request_id, error.details);
  }
  return new ApiError(response.status, `HTTP_${response.status}`, response.statusText || "failed");
}

// `api("POST", "/v1/jobs", {crew, inputs})`: the answer's JSON, or throws ApiError.
export async function api(method, path, body, { key, headers = {} } = {}) {
  const init = { method, headers: { ...authHeaders(key), ...headers } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, "NETWORK_ERROR", `the API did not answer: ${err.message}`);
  }
  if (!response.ok) {
    throw await failure(response);
  }
  if (response.status === 204) {
    return null;
  }
  return response.json();
}
