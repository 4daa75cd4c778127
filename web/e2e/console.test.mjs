// End-to-end tests: headless Chromium (playwright-core) against the real tokenboard binary.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'
import { startServer, freePort, api, ADMIN_TOKEN } from './server.mjs'

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium'
const shotsDir = mkdtempSync(join(tmpdir(), 'tokenboard-e2e-shots-'))
const profileDir = mkdtempSync(join(tmpdir(), 'tokenboard-e2e-profile-'))
let server
let context
let page

const NOW = Date.now()
const EVENTS = [
  { event_id: 'e1', ts: NOW - 20 * 60_000, method: 'POST', endpoint: '/v1/messages', model: 'model-alpha', provider: 'anthropic', credential: 'cred-1', key: 'key-a', status: 200, tokens: { input_uncached: 1000, cache_read: 2000, cache_write: 300, output: 400, reasoning: 50 }, latency_ms: 800, ttft_ms: 200, stream: true },
  { event_id: 'e2', ts: NOW - 15 * 60_000, method: 'POST', endpoint: '/v1/messages', model: 'model-alpha', provider: 'anthropic', credential: 'cred-1', key: 'key-a', status: 200, tokens: { input_uncached: 1500, output: 500 }, latency_ms: 1200, ttft_ms: 300 },
  { event_id: 'e3', ts: NOW - 10 * 60_000, method: 'POST', endpoint: '/v1/chat/completions', model: 'model-beta', provider: 'openai', credential: 'cred-2', key: 'key-b', status: 200, tokens: { input_uncached: 700, cache_read: 100, output: 250, reasoning: 100 }, latency_ms: 600 },
  { event_id: 'e4', ts: NOW - 8 * 60_000, method: 'POST', endpoint: '/v1/chat/completions', model: 'model-beta', provider: 'openai', credential: 'cred-2', key: 'key-b', status: 429, error_message: 'rate limited', tokens: { input_uncached: 30 }, latency_ms: 40 },
  { event_id: 'e5', ts: NOW - 5 * 60_000, method: 'POST', endpoint: '/v1/messages', model: 'model-gamma', provider: 'anthropic', credential: 'cred-3', key: 'key-c', status: 502, error_message: 'upstream bad gateway', latency_ms: 3000 },
]
const sumTokens = (evs) => evs.reduce((s, e) => s + Object.values(e.tokens ?? {}).reduce((a, b) => a + b, 0), 0)
const sumPart = (evs, part) => evs.reduce((s, e) => s + (e.tokens?.[part] ?? 0), 0)

async function ingest(events) {
  const r = await api(server.base, 'POST', '/api/ingest/events', events)
  assert.equal(r.status, 200, JSON.stringify(r.json))
  assert.equal(r.json.data.accepted, events.length)
}

async function shot(name) {
  for (const theme of ['light', 'dark']) {
    await page.evaluate((t) => {
      document.documentElement.dataset.theme = t
    }, theme)
    await page.waitForTimeout(150)
    await page.screenshot({ path: join(shotsDir, `${name}-${theme}.png`), fullPage: true })
  }
  await page.evaluate(() => {
    document.documentElement.dataset.theme = localStorage.getItem('tokenboard.theme') || 'light'
  })
}

const exact = (testid) => page.getAttribute(`[data-testid="${testid}"] .stat-value .num`, 'data-exact')
const rows = () => page.locator('[data-testid="log-row"]')
const zoned = (ms, tz) => {
  const p = Object.fromEntries(
    new Intl.DateTimeFormat('en-US', { timeZone: tz, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' })
      .formatToParts(new Date(ms))
      .map((x) => [x.type, x.value]),
  )
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second}`
}

// A browser that dies while starting (seen once in CI: SIGSEGV before the first page, every test
// then failing in this hook) is the machine's fault, not the console's: start it again, up to three
// times, each time with a fresh profile, and say so. A browser that starts and then misbehaves still
// fails the tests.
async function launchBrowser() {
  const options = {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    locale: 'en-US',
    timezoneId: 'Asia/Shanghai',
    viewport: { width: 1366, height: 900 },
    acceptDownloads: true,
  }
  for (let attempt = 1; ; attempt++) {
    try {
      return await chromium.launchPersistentContext(profileDir, options)
    } catch (err) {
      if (attempt === 3) throw err
      console.log(`chromium did not start (attempt ${attempt} of 3): ${String(err.message).split('\n')[0]}`)
      rmSync(profileDir, { recursive: true, force: true })
      mkdirSync(profileDir)
      await new Promise((r) => setTimeout(r, 1000))
    }
  }
}

before(async () => {
  server = await startServer()
  await ingest(EVENTS)
  context = await launchBrowser()
  page = context.pages()[0] ?? (await context.newPage())
  page.setDefaultTimeout(15_000)
  console.log(`screenshots: ${shotsDir}`)
})

after(async () => {
  await context?.close()
  await server?.stop()
  rmSync(profileDir, { recursive: true, force: true })
  console.log(`screenshots: ${shotsDir}`)
})

test('sign-in rejects a wrong token and accepts the admin token', async () => {
  await page.goto(`${server.base}/console`)
  assert.match(page.url(), /\/console\/#\/signin/)
  await page.fill('[data-testid="token-input"]', 'not-a-token')
  await page.click('[data-testid="signin-submit"]')
  await page.waitForSelector('[data-testid="signin-error"]')
  assert.match(await page.textContent('[data-testid="signin-error"]'), /401/)
  await shot('signin')
  await page.fill('[data-testid="token-input"]', ADMIN_TOKEN)
  await page.click('[data-testid="signin-submit"]')
  await page.waitForSelector('[data-testid="card-calls"]')
})

test('dashboard numbers equal what was ingested', async () => {
  await page.waitForFunction(() => document.querySelector('[data-testid="card-calls"] .num')?.getAttribute('data-exact') === '5')
  assert.equal(await exact('card-tokens'), String(sumTokens(EVENTS)))
  assert.equal(await exact('card-errors'), '2')
  assert.match(await page.textContent('[data-testid="card-success"] .stat-value'), /^60%$/)
  for (const part of ['input_uncached', 'cache_read', 'cache_write', 'output', 'reasoning']) {
    const title = await page.getAttribute(`[data-testid="token-split"] [data-part="${part}"]`, 'title')
    assert.equal(title.replace(/,/g, ''), String(sumPart(EVENTS, part)), part)
  }
  const models = await page.locator('[data-testid="top-models"] tbody tr td.name').allTextContents()
  assert.deepEqual(models.map((m) => m.trim()).slice(0, 3), ['model-alpha', 'model-beta', 'model-gamma'])
  assert.equal(await page.locator('[data-testid="empty-state"]').count(), 0)
  await shot('dashboard')
})

test('a new event appears on the dashboard live, without reload', async () => {
  await page.evaluate(() => ((window).__noReload = true))
  await page.waitForSelector('[data-testid="live-state"].on')
  await ingest([{ event_id: 'live1', ts: Date.now(), method: 'POST', endpoint: '/v1/messages', model: 'model-beta', key: 'key-b', status: 200, tokens: { input_uncached: 11, output: 7 }, latency_ms: 300 }])
  await page.waitForFunction(() => document.querySelector('[data-testid="card-calls"] .num')?.getAttribute('data-exact') === '6', null, { timeout: 10_000 })
  assert.equal(await exact('card-tokens'), String(sumTokens(EVENTS) + 18))
  assert.equal(await page.evaluate(() => (window).__noReload), true)
})

test('logs list, filter, detail drawer and live tail', async () => {
  await page.click('[data-testid="nav-logs"]')
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="log-row"]').length === 6)
  assert.equal(await page.locator('tr.err[data-testid="log-row"]').count(), 2)
  await shot('logs')

  await page.fill('[data-testid="filter-model"]', 'model-beta')
  await page.press('[data-testid="filter-model"]', 'Enter')
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="log-row"]').length === 3)
  for (const m of await page.locator('[data-testid="log-row"] [data-col="model"]').allTextContents()) assert.equal(m, 'model-beta')
  await page.selectOption('[data-testid="filter-status"]', 'error')
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="log-row"]').length === 1)
  assert.equal((await page.textContent('[data-testid="log-row"] [data-col="status"]')).trim(), '429')

  await rows().first().click()
  await page.waitForSelector('[data-testid="log-drawer"]')
  assert.equal(await page.textContent('[data-testid="log-drawer"] dd[data-field="event_id"]'), 'e4')
  assert.equal(await page.textContent('[data-testid="log-drawer"] dd[data-field="error"]'), 'rate limited')
  await shot('logs-drawer')
  await page.click('[data-testid="drawer-close"]')

  await page.selectOption('[data-testid="filter-status"]', '')
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="log-row"]').length === 3)
  await page.waitForSelector('[data-testid="live-state"].on')
  await ingest([{ event_id: 'tail1', ts: Date.now(), method: 'POST', endpoint: '/v1/chat/completions', model: 'model-beta', status: 200, tokens: { output: 5 } }])
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="log-row"]').length === 4, null, { timeout: 10_000 })
  await rows().first().click()
  assert.equal(await page.textContent('[data-testid="log-drawer"] dd[data-field="event_id"]'), 'tail1')
  await page.click('[data-testid="drawer-close"]')
  await page.click('[data-testid="filter-reset"]')
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="log-row"]').length === 7)
})

test('a key is shown in full exactly once, then masked, and can be deleted', async () => {
  await page.click('[data-testid="nav-keys"]')
  await page.fill('[data-testid="key-name"]', 'e2e-key')
  await page.fill('[data-testid="key-description"]', 'made by the e2e test')
  await page.click('[data-testid="key-create"]')
  await page.waitForSelector('[data-testid="key-secret"]')
  const secret = (await page.textContent('[data-testid="key-secret"]')).trim()
  assert.ok(secret.length >= 16, secret)
  await shot('keys-created')
  await page.click('[data-testid="key-secret-done"]')
  const row = page.locator('[data-testid="key-row"]', { hasText: 'e2e-key' })
  await row.waitFor()
  const masked = (await row.locator('[data-col="masked"]').textContent()).trim()
  assert.notEqual(masked, secret)
  assert.ok(!(await page.content()).includes(secret), 'the secret must not stay on the page')
  await page.reload()
  await row.waitFor()
  assert.ok(!(await page.content()).includes(secret), 'the secret must not come back')
  const listed = await api(server.base, 'GET', '/api/console/keys')
  assert.ok(!JSON.stringify(listed.json).includes(secret))

  await row.locator('[data-testid="key-edit"]').click()
  await page.fill('[data-testid="edit-description"]', 'edited by the e2e test')
  await page.click('[data-testid="edit-save"]')
  await page.waitForSelector('[data-testid="key-row"]:has-text("edited by the e2e test")')

  await row.locator('[data-testid="key-toggle"]').click()
  await page.waitForSelector('[data-testid="key-row"].dim')
  await shot('keys')
  await row.locator('[data-testid="key-delete"]').click()
  await row.locator('[data-testid="key-delete-confirm"]').click()
  await row.waitFor({ state: 'detached' })
  const after = await api(server.base, 'GET', '/api/console/keys')
  assert.ok(!after.json.data.some((k) => k.name === 'e2e-key'))
})

test('export downloads the filtered rows as CSV', async () => {
  await page.click('[data-testid="nav-export"]')
  await page.check('[data-testid="format-csv"]')
  await page.fill('[data-testid="filter-model"]', 'model-alpha')
  await page.press('[data-testid="filter-model"]', 'Enter')
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid="export-download"]')])
  assert.match(download.suggestedFilename(), /\.csv$/)
  const text = readFileSync(await download.path(), 'utf8')
  const lines = text.trim().split(/\r?\n/)
  const header = lines[0].split(',')
  assert.ok(header.includes('model') && header.includes('event_id'), lines[0])
  assert.equal(lines.length, 1 + 2, text)
  const ids = lines.slice(1).map((l) => l.split(',')[header.indexOf('event_id')])
  assert.deepEqual(ids, ['e1', 'e2'])
  await page.waitForSelector('[data-testid="export-done"]')
  await shot('export')
})

test('language and time zone switch labels and bucket boundaries', async () => {
  await page.selectOption('[data-testid="lang-select"]', 'zh-CN')
  assert.equal((await page.textContent('[data-testid="nav-dashboard"]')).trim(), '仪表板')
  assert.equal((await page.textContent('[data-testid="nav-keys"]')).trim(), '密钥管理')
  await page.selectOption('[data-testid="lang-select"]', 'en')
  assert.equal((await page.textContent('[data-testid="nav-dashboard"]')).trim(), 'Dashboard')

  // The default zone is the browser's (the test context runs in Asia/Shanghai).
  assert.equal(await page.inputValue('[data-testid="tz-select"]'), 'Asia/Shanghai')
  await page.click('[data-testid="nav-logs"]')
  await page.waitForSelector('[data-testid="log-row"]')
  const ms = (await api(server.base, 'GET', '/api/console/logs?limit=1')).json.data[0].ts_ms
  assert.equal(await page.textContent('[data-testid="log-row"] [data-col="time"]'), zoned(ms, 'Asia/Shanghai'))

  await page.click('[data-testid="nav-dashboard"]')
  await page.selectOption('[data-testid="range-select"]', '30d')
  await page.waitForSelector('[data-testid="trend-data"][data-granularity="day"] tbody tr:nth-child(2)', { state: 'attached' })
  const start = async () => Number(await page.getAttribute('[data-testid="trend-data"] tbody tr:nth-child(2)', 'data-start'))
  const shanghai = await start()
  assert.equal(zoned(shanghai, 'Asia/Shanghai').slice(11), '00:00:00')
  await page.selectOption('[data-testid="tz-select"]', 'America/New_York')
  await page.waitForFunction((old) => Number(document.querySelector('[data-testid="trend-data"] tbody tr:nth-child(2)')?.getAttribute('data-start')) !== old, shanghai)
  const newYork = await start()
  assert.equal(zoned(newYork, 'America/New_York').slice(11), '00:00:00')
  assert.notEqual(newYork % 86_400_000, shanghai % 86_400_000)
  await page.click('[data-testid="trend-data"] summary')
  await shot('dashboard-30d-new-york')

  await page.click('[data-testid="nav-logs"]')
  await page.waitForSelector('[data-testid="log-row"]')
  assert.equal(await page.textContent('[data-testid="log-row"] [data-col="time"]'), zoned(ms, 'America/New_York'))
  await page.reload()
  assert.equal(await page.inputValue('[data-testid="tz-select"]'), 'America/New_York')
})

test('history counts calls per UTC day and month, back beyond the dashboard ranges', async () => {
  const DAY = 86_400_000
  const old = { event_id: 'h1', ts: NOW - 200 * DAY, method: 'POST', endpoint: '/v1/messages', model: 'model-old', provider: 'legacy', credential: 'cred-9', key: 'key-old', status: 200, tokens: { input_uncached: 111, output: 22 }, latency_ms: 100 }
  await ingest([old])
  await page.click('[data-testid="nav-history"]')
  await page.selectOption('[data-testid="history-days"]', '365')
  const h = (await api(server.base, 'GET', '/api/console/history?days=365&group=model')).json.data
  const total = (xs) => xs.reduce((a, b) => a + b, 0)
  assert.ok(total(h.callData) >= EVENTS.length + 1, JSON.stringify(h.callData))
  await page.waitForFunction((n) => document.querySelector('[data-testid="history-calls"] .num')?.getAttribute('data-exact') === String(n), total(h.callData))
  assert.equal(await exact('history-tokens'), String(total(h.tokenData)))
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="history-rows"] td.name')].some((td) => td.textContent.trim() === 'model-old'))
  await shot('history')
  // The old call's UTC day holds it alone.
  await page.click('[data-testid="history-data"] summary')
  const day = new Date(old.ts).toISOString().slice(0, 10)
  const row = page.locator('[data-testid="history-data"] tbody tr', { hasText: day })
  assert.equal(await row.locator('td.r .num').first().getAttribute('data-exact'), '1')
  // Months, and a breakdown by provider.
  await page.selectOption('[data-testid="history-granularity"]', { label: 'month' })
  await page.waitForSelector('[data-testid="history-data"][data-granularity="month"]')
  const month = page.locator('[data-testid="history-data"] tbody tr', { hasText: day.slice(0, 7) })
  assert.equal(await month.count(), 1)
  await page.selectOption('[data-testid="history-group"]', 'provider')
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="history-rows"] td.name')].some((td) => td.textContent.trim() === 'legacy'))
  await page.selectOption('[data-testid="lang-select"]', 'zh-CN')
  assert.equal((await page.textContent('[data-testid="nav-history"]')).trim(), '历史')
  assert.match(await page.textContent('[data-testid="history-hint"]'), /每日汇总/)
  await page.selectOption('[data-testid="lang-select"]', 'en')
})

test('phone-sized screens', async () => {
  await page.setViewportSize({ width: 390, height: 844 })
  await page.click('[data-testid="nav-dashboard"]')
  await page.waitForSelector('[data-testid="card-calls"]')
  await shot('phone-dashboard')
  await page.click('[data-testid="nav-logs"]')
  await page.waitForSelector('[data-testid="log-row"]')
  await shot('phone-logs')
  await page.setViewportSize({ width: 1366, height: 900 })
})

test('a read-only token cannot change keys and is told why', async () => {
  const created = await api(server.base, 'POST', '/api/console/keys', { name: 'reader', scope: 'read' })
  assert.equal(created.status, 201)
  await page.click('[data-testid="sign-out"]')
  await page.waitForSelector('[data-testid="token-input"]')
  await page.fill('[data-testid="token-input"]', created.json.data.secret)
  await page.click('[data-testid="signin-submit"]')
  await page.waitForSelector('[data-testid="nav-keys"]')
  await page.click('[data-testid="nav-keys"]')
  await page.fill('[data-testid="key-name"]', 'should-fail')
  await page.click('[data-testid="key-create"]')
  await page.waitForSelector('[data-testid="keys-error"]')
  assert.match(await page.textContent('[data-testid="keys-error"]'), /read-only/)
})

test('an unknown token (401) sends the user back to sign-in with a message', async () => {
  await page.evaluate(() => sessionStorage.setItem('tokenboard.token', 'revoked-token'))
  await page.reload()
  await page.waitForSelector('[data-testid="signout-reason"]')
  assert.match(await page.textContent('[data-testid="signout-reason"]'), /401/)
  assert.match(page.url(), /#\/signin/)
})

test('an empty store explains how to send the first event', async () => {
  const empty = await startServer()
  try {
    await page.goto(`${empty.base}/console/`)
    await page.fill('[data-testid="token-input"]', ADMIN_TOKEN)
    const sourcesRead = page.waitForResponse((r) => r.url().startsWith(`${empty.base}/api/console/sources`) && r.status() === 200)
    await page.click('[data-testid="signin-submit"]')
    await page.waitForSelector('[data-testid="empty-state"]')
    assert.match(await page.textContent('[data-testid="empty-state"] pre'), /\/api\/ingest\/events/)
    // No collectors configured: the server lists none and the panel is not rendered.
    assert.deepEqual(await (await sourcesRead).json(), { code: 0, data: [] })
    await page.waitForTimeout(100)
    assert.equal(await page.locator('[data-testid="sources"]').count(), 0)
    await shot('empty')
  } finally {
    // Leave the page first: an open live stream would hold the server's graceful shutdown.
    await page.goto('about:blank')
    await empty.stop()
  }
})

test('the collectors panel shows a CLIProxyAPI source that cannot connect', async () => {
  const port = await freePort() // nothing listens here
  const cpa = await startServer({
    config: ['sources:', '  cliproxyapi:', '    - name: cpa-e2e', `      address: 127.0.0.1:${port}`, '      management_key_env: TB_E2E_CPA_KEY', ''].join('\n'),
    env: { TB_E2E_CPA_KEY: 'e2e-management-key' },
  })
  try {
    await page.goto(`${cpa.base}/console/`)
    await page.fill('[data-testid="token-input"]', ADMIN_TOKEN)
    await page.click('[data-testid="signin-submit"]')
    const row = page.locator('[data-testid="source-row"][data-name="cpa-e2e"]')
    await row.waitFor()
    assert.equal((await page.textContent('[data-testid="sources"] h3')).trim(), 'Collectors')
    assert.equal((await row.locator('[data-col="name"]').textContent()).trim(), 'cpa-e2e')
    assert.equal((await row.locator('[data-col="address"]').textContent()).trim(), `127.0.0.1:${port}`)
    assert.equal((await row.locator('[data-col="mode"]').textContent()).trim(), 'subscribe')
    assert.ok((await row.locator('[data-col="state"]').textContent()).trim().length > 0)
    assert.equal((await row.locator('[data-col="last-event"]').textContent()).trim(), 'None yet')
    assert.equal((await row.locator('[data-col="events"]').textContent()).trim(), '0')

    // Not connected and never refused: an amber connecting/reconnecting badge, as the API says.
    const badge = row.locator('[data-testid="source-badge"]')
    const en = { connecting: 'Connecting', reconnecting: 'Reconnecting' }
    const zh = { connecting: '连接中', reconnecting: '重连中' }
    // Label and text are read together: the badge may turn from connecting to reconnecting.
    const read = () => badge.evaluate((e) => [e.dataset.tone, e.dataset.label, e.textContent.trim()])
    const [tone, label, text] = await read()
    assert.equal(tone, 'warn')
    assert.ok(label in en, label)
    assert.equal(text, en[label])
    const listed = await api(cpa.base, 'GET', '/api/console/sources')
    assert.equal(listed.json.data.length, 1)
    assert.equal(listed.json.data[0].connected, false)
    assert.equal(listed.json.data[0].auth_failures, 0)

    // The panel refreshes by itself: the reconnect count grows while nothing listens.
    const reconnects = async () => Number((await row.locator('[data-col="reconnects"]').textContent()).replace(/\D/g, ''))
    const before = await reconnects()
    await page.waitForFunction(
      (n) => Number(document.querySelector('[data-testid="source-row"] [data-col="reconnects"]')?.textContent?.replace(/\D/g, '')) > n,
      before,
      { timeout: 20_000 },
    )
    await shot('sources')

    await page.selectOption('[data-testid="lang-select"]', 'zh-CN')
    assert.equal((await page.textContent('[data-testid="sources"] h3')).trim(), '采集源')
    assert.equal(await page.textContent('[data-testid="sources"] th:nth-child(2)'), '地址')
    const [zhTone, zhLabel, zhText] = await read()
    assert.equal(zhTone, 'warn')
    assert.equal(zhText, zh[zhLabel])
    assert.equal((await row.locator('[data-col="last-event"]').textContent()).trim(), '暂无')
    await shot('sources-zh')
    await page.selectOption('[data-testid="lang-select"]', 'en')
  } finally {
    await page.goto('about:blank')
    await cpa.stop()
  }
})
