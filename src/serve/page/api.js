// The page's one way to the server: `fetch` with the bearer token, every
// failure as an ApiError `{status, code, message}`, and what to do about
// an authority error, naming the least role that is enough.

export const session = { token: localStorage.getItem("swarm.token") || "", role: null };

export class ApiError extends Error {
  constructor(status, code, message) {
    super(`${code}: ${message}`);
    this.status = status; this.code = code; this.detail = message;
  }
}

export function headers(json) {
  const h = {};
  if (session.token) h["Authorization"] = "Bearer " + session.token;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

export async function api(method, path, body) {
  let resp;
  try {
    resp = await fetch(path, { method, headers: headers(body !== undefined),
                               body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, "unreachable", `the server did not answer (${e.message})`);
  }
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new ApiError(resp.status, data.code || String(resp.status), data.message || resp.statusText);
  return data;
}

/** The least role that may do each thing the page does: the server's
 *  one table (operator does all, senior answers and reads, observer reads). */
export const LEAST_ROLE = { read: "observer", answer: "senior", start: "operator", cancel: "operator", resume: "operator" };
const DOING = { read: "watch runs", answer: "answer questions", start: "start runs", cancel: "cancel runs", resume: "resume runs" };

/** What to do about `err` met while trying `action`, or null when it is
 *  not about the token. */
export function authAdvice(err, action = "read") {
  const role = LEAST_ROLE[action] || "observer";
  const mint = `swarm token --role ${role}`;
  const enough = `To ${DOING[action] || action}, paste a token of role ${role} or above into the box at the top (make one with \`${mint}\`).`;
  if (err.status === 401) {
    const why = err.code === "no_token" ? "This server needs a token." : `The token was refused: ${err.detail}.`;
    return `${why} ${enough}`;
  }
  if (err.status === 403 && err.code === "forbidden") return `Not allowed: ${err.detail}. ${enough}`;
  return null;
}
