// ocean.js 9 (built from its source; its dist/lib.module.mjs is argv[2]) against `make run`'s
// stack at <api>/node, with its public ProviderInstance API only: a token (it first asks
// POST <node>/directCommand {"command":"status"} for the node's peer id and signs it into the
// message), a free raw-code job authorised by that token to status 70, and the token's
// invalidation, after which it is refused. Usage: node driver.mjs <lib.module.mjs> <stack.json> <report.json>
import { readFileSync, writeFileSync } from 'node:fs'
import { pathToFileURL } from 'node:url'

const [libPath, stackPath, reportPath] = process.argv.slice(2)
const { ProviderInstance } = await import(pathToFileURL(libPath).href)
const { JsonRpcProvider, Wallet } = await import(pathToFileURL(libPath.replace(/dist\/lib\.module\.mjs$/, 'node_modules/ethers/lib.esm/index.js')).href)
const stack = JSON.parse(readFileSync(stackPath, 'utf8'))
const nodeUri = stack.providerUrl + '/node'
const report = { nodeUri, statusesSeen: [] }
const chain = new JsonRpcProvider(stack.rpcUrl, undefined, { cacheTimeout: -1 })
const consumer = new Wallet(stack.consumerPrivateKey, chain)
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const one = (jobs) => (Array.isArray(jobs) ? jobs[0] : jobs)

report.nodeStatus = await ProviderInstance.getNodeStatus(nodeUri)
const environments = await ProviderInstance.getComputeEnvironments(nodeUri)
const environment = environments.find((env) => env.free)
const token = await ProviderInstance.generateAuthToken(consumer, nodeUri)
report.token = token
const algorithm = {
  meta: {
    rawcode: 'import json, os\nopen(os.path.join(os.environ.get("DATA_DIR", "/data"), "outputs", "v9.json"), "w").write(json.dumps({"ok": 9}))\nprint("ocean.js 9 job done", flush=True)',
    container: { entrypoint: 'python $ALGO', image: 'python', tag: '3.11-slim', checksum: 'sha256:' + 'a1'.repeat(32) }
  }
}
const datasets = [{ documentId: stack.dataset.did, serviceId: stack.dataset.serviceId }]
const started = one(await ProviderInstance.freeComputeStart(nodeUri, token, environment.id, datasets, algorithm))
report.freeStart = started
const deadline = Date.now() + 120000
let job
for (;;) {
  job = one(await ProviderInstance.computeStatus(nodeUri, token, started.jobId))
  if (!report.statusesSeen.includes(job.status)) report.statusesSeen.push(job.status)
  if ([7, 8, 31, 32, 41, 62, 70].includes(job.status)) break
  if (Date.now() > deadline) throw new Error(`job ${started.jobId} stuck at ${job.status}`)
  await sleep(250)
}
report.finished = job
report.invalidate = await ProviderInstance.invalidateAuthToken(consumer, token, nodeUri)
try {
  await ProviderInstance.computeStop(started.jobId, nodeUri, token)
  report.afterInvalidation = 'accepted'
} catch (error) {
  report.afterInvalidation = String(error.message)
}
writeFileSync(reportPath, JSON.stringify(report, null, 2))
chain.destroy()
