// The operator's console: signs in (EIP-191 personal_sign over keccak, as every signed route of
// the provider), then calls /admin/api with the session token and a fresh nonce per call, one
// call at a time (nonces must arrive in order). Nothing here holds a key beyond the sign-in.
import { getPublicKey, signAsync } from './vendor/secp256k1.js'
import { keccak_256 } from './vendor/sha3.js'

const here = new URL('./', import.meta.url)            // .../admin/
const api = (path) => new URL('api/' + path, here)      // .../admin/api/<path>
const nonceUrl = new URL('../api/services/nonce', here) // the provider's nonce route
const SESSION = 'c2d-admin-session'
const $ = (id) => document.getElementById(id)
const utf8 = (text) => new TextEncoder().encode(text)
const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
const fromHex = (text) => Uint8Array.from(text.replace(/^0x/, '').match(/../g).map((b) => parseInt(b, 16)))

let session = JSON.parse(sessionStorage.getItem(SESSION) || 'null')
let lastNonce = null
let queue = Promise.resolve()
let cursor = null

function addressOf (publicKey) {
  const hash = hex(keccak_256(publicKey.slice(1))).slice(-40)
  const check = hex(keccak_256(utf8(hash)))
  return '0x' + [...hash].map((c, i) => (parseInt(check[i], 16) >= 8 ? c.toUpperCase() : c)).join('')
}

// What the provider checks: personal_sign over the 32 bytes of keccak(message).
function digest (message) { return keccak_256(utf8(message)) }

async function signWithKey (key, message) {
  const prefixed = new Uint8Array([...utf8('\x19Ethereum Signed Message:\n32'), ...digest(message)])
  const signature = await signAsync(keccak_256(prefixed), key, { prehash: false, format: 'recovered' })
  return '0x' + hex(signature.slice(1)) + (27 + signature[0]).toString(16)
}

async function currentNonce (address) {
  const answer = await fetch(nonceUrl + '?userAddress=' + address).then((r) => r.json())
  return BigInt(answer.nonce)
}

async function signIn (address, sign) {
  const nonce = (await currentNonce(address)) + 1n
  const signature = await sign(address + nonce + 'adminSignIn')
  const response = await fetch(api('session'), { method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ address, nonce: nonce.toString(), signature }) })
  const body = await response.json()
  if (!response.ok) throw new Error(body.error || JSON.stringify(body.errors || body))
  session = { address: body.address, token: body.token, expiresAt: body.expiresAt }
  sessionStorage.setItem(SESSION, JSON.stringify(session))
  lastNonce = nonce
  show()
}

async function signInWithKey (text) {
  const key = fromHex(text.trim())
  if (key.length !== 32) throw new Error('a private key is 32 bytes of hex')
  await signIn(addressOf(getPublicKey(key, false)), (message) => signWithKey(key, message))
}

async function signInWithWallet () {
  const [address] = await window.ethereum.request({ method: 'eth_requestAccounts' })
  await signIn(address, (message) => window.ethereum.request({ method: 'personal_sign',
    params: ['0x' + hex(digest(message)), address] }))
}

// One admin call: the session token and the next nonce; calls go one after another.
function call (method, path, params = {}) {
  const run = async () => {
    if (lastNonce === null) lastNonce = await currentNonce(session.address)
    for (let attempt = 0; attempt < 2; attempt++) {
      lastNonce += 1n
      const fields = { ...params, address: session.address, nonce: lastNonce.toString() }
      const init = { method, headers: { Authorization: session.token } }
      let url = api(path)
      if (method === 'GET' || method === 'DELETE') {
        url = new URL(url); Object.entries(fields).forEach(([k, v]) => v !== undefined && v !== '' && url.searchParams.set(k, v))
      } else {
        init.headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(fields)
      }
      const response = await fetch(url, init)
      const body = await response.json()
      if (response.ok) return body
      if (response.status === 401) { signOut(false); throw new Error(body.error) }
      if (body.errors && body.errors.nonce && attempt === 0) { lastNonce = await currentNonce(session.address); continue }
      throw new Error(body.error ? (typeof body.error === 'string' ? body.error : JSON.stringify(body.error)) : JSON.stringify(body.errors))
    }
  }
  const result = queue.then(run)
  queue = result.catch(() => {})
  return result
}

function cell (row, content, className) {
  const td = document.createElement('td')
  if (content instanceof Node) td.append(content); else td.textContent = content ?? ''
  if (className) td.className = className
  row.append(td)
  return td
}
const when = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleString() : '')
const short = (text) => (text ? text.slice(0, 10) + '…' : '')

function button (label, action) {
  const b = document.createElement('button')
  b.textContent = label
  b.addEventListener('click', async () => {
    b.disabled = true
    try { await action(); await refresh() } catch (error) { report(error) } finally { b.disabled = false }
  })
  return b
}

function fill (id, rows, render) {
  const body = $(id).querySelector('tbody')
  body.replaceChildren(...rows.map((item) => { const tr = document.createElement('tr'); render(tr, item); return tr }))
}

function jobRow (tr, job, extra) {
  tr.dataset.jobId = job.jobId
  const code = document.createElement('code'); code.textContent = job.jobId; code.title = job.jobId
  cell(tr, code); cell(tr, job.environment); cell(tr, short(job.owner)).title = job.owner
  cell(tr, `${job.status} ${job.statusText}`, 'status')
  extra(tr, job)
}

async function refresh () {
  const [overview, active, failures, payments, free] = [await call('GET', 'overview'),
    await call('GET', 'jobs', { status: 'active' }), await call('GET', 'jobs', { status: 'failed', limit: 20 }),
    await call('GET', 'payments'), await call('GET', 'free')]
  fill('environments', overview.environments, (tr, env) => {
    tr.dataset.environment = env.id
    const box = document.createElement('span'); box.className = 'bar-box'
    const bar = document.createElement('span'); bar.className = 'bar'
    bar.style.width = Math.min(100, (100 * env.currentJobs) / Math.max(1, env.maxJobs)) + '%'
    box.append(bar)
    const load = document.createElement('span'); load.append(box, `${env.currentJobs}/${env.maxJobs}`)
    cell(tr, env.id); cell(tr, load); cell(tr, env.running); cell(tr, env.queued)
    cell(tr, env.free ? `${env.free.inUse}/${env.free.maxJobs}` : '—')
    cell(tr, env.drained ? 'drained' : 'accepting', env.drained ? 'drained' : '')
    cell(tr, button(env.drained ? 'Undrain' : 'Drain', () => call('POST', 'environments/drain', { environment: env.id, drain: !env.drained })))
  })
  const select = $('filter-environment')
  if (select.options.length === 1) overview.environments.forEach((env) => select.add(new Option(env.id, env.id)))
  fill('active', active.jobs, (tr, job) => jobRow(tr, job, (tr, job) => {
    cell(tr, when(job.dateCreated))
    cell(tr, button('Stop', () => call('POST', 'jobs/stop', { jobId: job.jobId })))
  }))
  fill('failures', failures.jobs, (tr, job) => jobRow(tr, job, (tr, job) => { cell(tr, job.reason); cell(tr, when(job.dateFinished)) }))
  fill('chains', overview.chains, (tr, chain) => {
    cell(tr, chain.chainId); cell(tr, chain.gasBalance ?? 'no answer', chain.low ? 'low' : '')
    cell(tr, chain.alertBelow); cell(tr, chain.escrow || 'none')
  })
  const earnings = payments.chains.flatMap((chain) => Object.entries(chain.totals).map(([token, t]) => ({ chain: chain.chainId, token, ...t })))
  fill('earnings', earnings, (tr, e) => {
    cell(tr, e.chain); cell(tr, short(e.token)).title = e.token
    for (const key of ['claimed', 'locked', 'claims', 'cancels', 'failed']) cell(tr, e[key])
  })
  const consumers = free.environments.flatMap((env) => env.consumers.map((c) => ({ environment: env.environment, ...c })))
  fill('free', consumers, (tr, c) => { cell(tr, c.environment); cell(tr, c.consumer); cell(tr, c.running); cell(tr, c.recent) })
  await listJobs(false)
  $('status').textContent = 'Updated ' + new Date().toLocaleTimeString()
  document.body.dataset.ready = 'true'
}

async function listJobs (more) {
  const filters = { environment: $('filter-environment').value, status: $('filter-status').value,
    consumer: $('filter-consumer').value.trim(), next: more ? cursor : undefined }
  const page = await call('GET', 'jobs', filters)
  const rows = page.jobs
  const body = $('jobs').querySelector('tbody')
  if (!more) body.replaceChildren()
  rows.forEach((job) => {
    const tr = document.createElement('tr')
    jobRow(tr, job, (tr, job) => { cell(tr, when(job.dateCreated)); cell(tr, job.reason) })
    body.append(tr)
  })
  cursor = page.next
  $('more').hidden = !cursor
}

function report (error) { $('status').textContent = 'Error: ' + error.message; $('status').className = 'error' }

function signOut (tell = true) {
  if (tell && session) call('DELETE', 'session').catch(() => {})
  session = null; lastNonce = null
  sessionStorage.removeItem(SESSION)
  show()
}

let timer = null
function show () {
  const signedIn = Boolean(session && session.expiresAt * 1000 > Date.now())
  $('sign-in').hidden = signedIn; $('console').hidden = !signedIn; $('sign-out').hidden = !signedIn
  $('who').textContent = signedIn ? session.address : ''
  clearInterval(timer)
  if (signedIn) { refresh().catch(report); timer = setInterval(() => refresh().catch(report), 10000) }
}

function failed (error) { $('sign-in-error').textContent = error.message }
$('wallet').addEventListener('click', () => signInWithWallet().catch(failed))
$('key-sign-in').addEventListener('click', () => signInWithKey($('key').value).then(() => { $('key').value = '' }).catch(failed))
$('sign-out').addEventListener('click', () => signOut())
$('filters').addEventListener('submit', (event) => { event.preventDefault(); listJobs(false).catch(report) })
$('more').addEventListener('click', () => listJobs(true).catch(report))
if (!window.ethereum) { $('wallet').disabled = true; $('no-wallet').hidden = false }

// `make run` prints /admin#localKey=<the local stack's admin key>: honoured on loopback only, and
// taken out of the address bar at once (a fragment never reaches the server or a Referer).
const hint = new URLSearchParams(location.hash.slice(1)).get('localKey')
if (hint) history.replaceState(null, '', location.pathname + location.search)
if (hint && ['127.0.0.1', 'localhost', '[::1]'].includes(location.hostname)) {
  signInWithKey(hint).catch(failed)
} else {
  show()
}
