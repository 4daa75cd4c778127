// Starts the real tokenboard binary on a free port with a fresh data dir, for the e2e tests.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, existsSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export const ADMIN_TOKEN = 'tb_e2e_admin_token_0123456789'

export function serverBinary() {
  const bin =
    process.env.TOKENBOARD_BIN ||
    join(process.env.CARGO_TARGET_DIR || '/tmp/tokenboard-target', 'debug', 'tokenboard')
  if (!existsSync(bin)) throw new Error(`tokenboard binary not found at ${bin} (set TOKENBOARD_BIN)`)
  return bin
}

/** A port that was free a moment ago (nothing listens on it once this resolves). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

/**
 * Starts a server. `config` is YAML written to a temp file and passed as `serve --config FILE`;
 * `env` adds environment variables (e.g. the management keys a config's sources name).
 */
export async function startServer({ config, env } = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), 'tokenboard-e2e-data-'))
  const confDir = config === undefined ? null : mkdtempSync(join(tmpdir(), 'tokenboard-e2e-config-'))
  const args = ['serve']
  if (confDir) {
    const file = join(confDir, 'tokenboard.yaml')
    writeFileSync(file, config)
    args.push('--config', file)
  }
  const port = await freePort()
  const child = spawn(serverBinary(), args, {
    env: {
      ...process.env,
      ...env,
      TOKENBOARD_ADMIN_TOKEN: ADMIN_TOKEN,
      TOKENBOARD_DATA_DIR: dataDir,
      CONSOLE_PORT: String(port),
      TOKENBOARD_BIND: '127.0.0.1',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let log = ''
  child.stdout.on('data', (d) => (log += d))
  child.stderr.on('data', (d) => (log += d))
  const base = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 30_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited early (${child.exitCode}):\n${log}`)
    try {
      const r = await fetch(`${base}/healthz`)
      if (r.status === 200) break
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGTERM')
      throw new Error(`server did not become healthy:\n${log}`)
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  return {
    base,
    port,
    dataDir,
    log: () => log,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r))
        child.kill('SIGTERM')
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
        await exited
        clearTimeout(timer)
      }
      rmSync(dataDir, { recursive: true, force: true })
      if (confDir) rmSync(confDir, { recursive: true, force: true })
    },
  }
}

/** Calls the API with the admin token; returns the parsed JSON body and the status. */
export async function api(base, method, path, body, token = ADMIN_TOKEN) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const text = await res.text()
  let json = null
  try {
    json = JSON.parse(text)
  } catch {
    json = text
  }
  return { status: res.status, json }
}
