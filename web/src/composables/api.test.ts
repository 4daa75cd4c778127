import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { get, write, query, ApiError } from './api'
import { token, signIn, signOutReason } from './auth'

function reply(status: number, body: unknown) {
  return vi.fn(async () => new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } }))
}

describe('API client', () => {
  beforeEach(() => signIn('tb_test_token'))
  afterEach(() => vi.unstubAllGlobals())

  it('sends the bearer token and the query, and unwraps data', async () => {
    const f = reply(200, { code: 0, data: { api_call_count: 3 } })
    vi.stubGlobal('fetch', f)
    const data = await get<{ api_call_count: number }>('/api/console/stats', { tz: 'UTC', model: '', top: 5 })
    expect(data.api_call_count).toBe(3)
    const [url, init] = f.mock.calls[0] as unknown as [string, RequestInit]
    expect(url).toMatch(/\/api\/console\/stats\?tz=UTC&top=5$/)
    expect(new Headers(init.headers).get('Authorization')).toBe('Bearer tb_test_token')
  })

  it('signs out on 401', async () => {
    vi.stubGlobal('fetch', reply(401, { code: 401, msg: 'Unauthorized' }))
    await expect(get('/api/console/stats')).rejects.toMatchObject({ status: 401, message: 'Unauthorized' })
    expect(token.value).toBeNull()
    expect(sessionStorage.getItem('tokenboard.token')).toBeNull()
    expect(signOutReason.value).toBe('signin.expired')
  })

  it('surfaces the server msg of other errors and keeps the session', async () => {
    vi.stubGlobal('fetch', reply(409, { code: 409, msg: 'key limit reached (max_keys = 2)' }))
    const err = await write('POST', '/api/console/keys', { name: 'x' }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ApiError)
    expect((err as ApiError).status).toBe(409)
    expect((err as ApiError).message).toBe('key limit reached (max_keys = 2)')
    expect(token.value).toBe('tb_test_token')
  })

  it('falls back to the status when the body is not JSON', async () => {
    vi.stubGlobal('fetch', vi.fn(async () => new Response('<html>bad gateway</html>', { status: 502, statusText: 'Bad Gateway' })))
    await expect(get('/api/console/logs')).rejects.toMatchObject({ status: 502, message: 'Bad Gateway' })
  })

  it('drops empty parameters from the query', () => {
    expect(query({ a: '', b: null, c: undefined, d: 0, e: 'x y' })).toBe('?d=0&e=x+y')
    expect(query({})).toBe('')
  })
})
