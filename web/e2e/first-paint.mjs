// Measures how long the console takes from navigation to the first screen (the sign-in form),
// and to the signed-in dashboard's cards, against the real binary on loopback.
//   node e2e/first-paint.mjs    (TOKENBOARD_BIN as for the e2e tests)
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'
import { startServer, ADMIN_TOKEN } from './server.mjs'

const server = await startServer()
const profile = mkdtempSync(join(tmpdir(), 'tokenboard-paint-'))
const context = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
})
const page = await context.newPage()
const results = []
for (let i = 0; i < 5; i++) {
  await page.evaluate(() => sessionStorage.clear()).catch(() => {})
  const t0 = Date.now()
  await page.goto(`${server.base}/console/`, { waitUntil: 'commit' })
  await page.locator('input[type="password"], input[type="text"]').first().waitFor()
  const signIn = Date.now() - t0
  results.push(signIn)
}
await page.locator('input').first().fill(ADMIN_TOKEN)
await page.keyboard.press('Enter')
const t1 = Date.now()
await page.locator('.card, [class*="card"]').first().waitFor()
const dash = Date.now() - t1
results.sort((a, b) => a - b)
console.log(`first screen (sign-in form visible): median ${results[2]} ms, max ${results[4]} ms over 5 loads; dashboard cards after sign-in: ${dash} ms`)
await context.close()
await server.stop()
rmSync(profile, { recursive: true, force: true })
