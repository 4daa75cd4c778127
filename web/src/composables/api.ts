import { token, signOut } from './auth'

/** An error reply from the API: the HTTP status and the server's `msg`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
    this.name = 'ApiError'
  }
}

export type Params = Record<string, string | number | null | undefined>

export function query(params: Params = {}): string {
  const q = new URLSearchParams()
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== '') q.set(k, String(v))
  }
  const s = q.toString()
  return s ? `?${s}` : ''
}

/** The API lives at the server root; the console may be served under any path. */
export function apiUrl(path: string, params?: Params): string {
  return `${location.origin}${path}${query(params)}`
}

/** Sends a request with the signed-in token; a 401 signs the user out. */
export async function send(path: string, init: RequestInit & { params?: Params } = {}): Promise<Response> {
  const headers = new Headers(init.headers)
  if (token.value) headers.set('Authorization', `Bearer ${token.value}`)
  if (init.body !== undefined) headers.set('Content-Type', 'application/json')
  const res = await fetch(apiUrl(path, init.params), { ...init, headers })
  if (res.ok) return res
  let msg = res.statusText || `HTTP ${res.status}`
  try {
    const body = (await res.json()) as { msg?: unknown }
    if (typeof body.msg === 'string' && body.msg) msg = body.msg
  } catch {
    // Not JSON: keep the status text.
  }
  if (res.status === 401) signOut('signin.expired')
  throw new ApiError(res.status, msg)
}

export interface Envelope<T> {
  code: number
  data: T
  next_cursor?: string | null
}

export async function getEnvelope<T>(path: string, params?: Params, signal?: AbortSignal): Promise<Envelope<T>> {
  const res = await send(path, { params, signal })
  return (await res.json()) as Envelope<T>
}

export async function get<T>(path: string, params?: Params, signal?: AbortSignal): Promise<T> {
  return (await getEnvelope<T>(path, params, signal)).data
}

export async function write<T>(method: 'POST' | 'PATCH' | 'DELETE', path: string, body?: unknown): Promise<T> {
  const res = await send(path, { method, body: body === undefined ? undefined : JSON.stringify(body) })
  return ((await res.json()) as Envelope<T>).data
}

/** Tries a token against a console read without touching the signed-in state; returns the HTTP status. */
export async function checkToken(candidate: string): Promise<number> {
  const res = await fetch(apiUrl('/api/console/status'), { headers: { Authorization: `Bearer ${candidate}` } })
  return res.status
}
