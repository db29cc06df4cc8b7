// Shared by the LiveStore tests: a real tributary process, real LiveStore clients
// (in-memory adapter-node stores syncing through @livestore/sync-cf), and ways to wait.
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

import { makeAdapter } from '@livestore/adapter-node'
import { createStorePromise, Events, makeSchema, Schema, State, StoreInternalsSymbol } from '@livestore/livestore'
import { Effect } from '@livestore/utils/effect'
import { makeHttpSync, makeWsSync } from '@livestore/sync-cf/client'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const BIN = process.env.TRIBUTARY_BIN ?? join(process.env.CARGO_TARGET_DIR ?? join(root, 'target'), 'debug', 'tributary')

export const events = {
  itemAdded: Events.synced({
    name: 'v1.ItemAdded',
    schema: Schema.Struct({ id: Schema.String, n: Schema.Number }),
  }),
}
const tables = {
  items: State.SQLite.table({
    name: 'items',
    columns: { id: State.SQLite.text({ primaryKey: true }), n: State.SQLite.integer() },
  }),
}
const materializers = State.SQLite.materializers(events, {
  'v1.ItemAdded': ({ id, n }) => tables.items.insert({ id, n }),
})
const schema = makeSchema({ events, state: State.SQLite.makeState({ tables, materializers }) })

export const tempDir = () => mkdtempSync(join(tmpdir(), 'tributary-livestore-'))
export const wipe = (dir) => rmSync(dir, { recursive: true, force: true })

/** Starts `tributary serve` on 127.0.0.1 (a free port unless `addr` says which). */
export async function startServer(data, addr = '127.0.0.1:0') {
  const child = spawn(BIN, ['serve', '--addr', addr, '--data', data], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, RUST_LOG: 'warn' },
  })
  const lines = createInterface({ input: child.stdout })
  const first = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no listening line within 10 s')), 10_000)
    lines.once('line', (line) => { clearTimeout(timer); resolve(line) })
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`tributary exited with ${code}`)) })
  })
  lines.on('line', () => {})
  const url = first.replace('tributary listening on ', '').trim()
  if (!url.startsWith('http://127.0.0.1:')) throw new Error(`unexpected first line ${first}`)
  const exited = new Promise((resolve) => child.once('exit', resolve))
  return {
    url,
    addr: url.slice('http://'.length),
    /** SIGTERM by PID, and wait for the exit. */
    async stop() {
      if (child.exitCode === null) process.kill(child.pid, 'SIGTERM')
      // The server exits within its 10 s shutdown timeout; never leave one behind.
      const timer = setTimeout(() => child.exitCode === null && process.kill(child.pid, 'SIGKILL'), 12_000)
      await exited
      clearTimeout(timer)
    },
  }
}

/**
 * A LiveStore client of `storeId` syncing through `baseUrl` over `transport`. Tests that
 * stop the server pass `onSyncError: 'ignore'`, so that the client retries through the
 * outage instead of shutting down.
 */
export async function openClient(baseUrl, storeId, transport, clientId, { onSyncError = 'shutdown' } = {}) {
  const backend = transport === 'ws'
    ? makeWsSync({ url: `${baseUrl.replace(/^http/, 'ws')}/api/v1/livestore` })
    : makeHttpSync({ url: `${baseUrl}/api/v1/livestore`, livePull: { pollInterval: 200 } })
  const adapter = makeAdapter({
    storage: { type: 'in-memory' },
    clientId,
    sessionId: `${clientId}-session`,
    sync: { backend, onSyncError, initialSyncOptions: { _tag: 'Blocking', timeout: 5000 } },
  })
  const store = await createStorePromise({ adapter, schema, storeId, disableDevtools: true })
  return {
    store,
    clientId,
    add: (id, n) => store.commit(events.itemAdded({ id, n })),
    /** The ids in the client's table. Table order is not event order (a rebase rolls
     * rows back and SQLite reuses rowids), so tests compare these as sets. */
    rows: () => store.query(tables.items.select()).map((r) => r.id),
    status: () => store.syncStatus(),
    /**
     * Where the client stands with the server. `syncStatus()` is the session's view of
     * its leader, which can be synced while the leader has not pushed anything yet; the
     * leader's own state says what the server has confirmed.
     */
    /**
     * The first `n` events of the client's own eventlog, in its order, as `[seq, id]`
     * pairs: what the client applied, and where.
     */
    eventlog: async (n) => {
      const out = []
      const read = (async () => {
        for await (const e of store.events({ until: { global: n, client: 0, rebaseGeneration: 0 } })) {
          out.push([e.seqNum.global ?? e.seqNum, e.args.id])
          if (out.length >= n) break
        }
      })()
      await Promise.race([read, sleep(5000)])
      return out
    },
    backend: async () => {
      const s = await Effect.runPromise(store[StoreInternalsSymbol].clientSession.leaderThread.syncState.get)
      return { pending: s.pending.length, head: s.upstreamHead.global }
    },
    // Bounded, so that a client stuck shutting down fails nothing and hangs nothing.
    close: () => Promise.race([
      store.shutdownPromise?.() ?? Promise.resolve(),
      // unref'd: a timer left over from a quick shutdown must not keep node alive.
      new Promise((r) => setTimeout(r, 5000).unref()),
    ]).catch(() => {}),
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** Polls `check` until it returns something truthy, or fails after `ms`. */
export async function until(what, check, ms = 10_000) {
  const deadline = Date.now() + ms
  for (;;) {
    const value = await check()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await sleep(25)
  }
}

/**
 * Waits until every client has `n` rows, nothing pending in its session or its leader,
 * and its leader has confirmed the server's seq `n`.
 */
export async function converged(clients, n, ms = 15_000) {
  await until(`${n} synced rows on every client`, async () => {
    for (const c of clients) {
      if (c.rows().length !== n || c.status().pendingCount !== 0) return false
      const b = await c.backend()
      if (b.pending !== 0 || b.head !== n) return false
    }
    return true
  }, ms)
}

/** The store's events in Tributary, through the plain history API. */
export async function topicEvents(url, storeId) {
  const out = []
  let cursor = '0'
  for (;;) {
    const res = await fetch(`${url}/api/v1/events/history?topic=livestore.${storeId}&limit=1000&cursor=${cursor}`)
    const page = await res.json()
    out.push(...page.events)
    if (!page.has_more) return out
    cursor = page.next_cursor
  }
}

/** A counter from /metrics. */
export async function metric(url, name) {
  const text = await (await fetch(`${url}/metrics`)).text()
  const line = text.split('\n').find((l) => l.startsWith(`${name} `))
  return Number(line?.split(' ')[1] ?? NaN)
}
