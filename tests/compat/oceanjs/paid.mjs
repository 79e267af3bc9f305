// ocean.js 8.6.2's paid compute flow (Ocean Node's escrow) against `make run`'s stack at <api>/node,
// with its public API only: ProviderInstance.initializeCompute -> EscrowContract (approve, deposit,
// authorize) -> Datatoken.startOrder for the dataset and the algorithm -> computeStart -> status 70
// -> result. Usage: node paid.mjs <stack.json> <report.json>. Writes what every call answered and
// the Escrow's events of the provider in the blocks the run covered; tests/compat/test_compat_ocean_js.py
// checks them. Any exception fails the run.
import { readFileSync, writeFileSync } from 'node:fs'
import { JsonRpcProvider, Wallet, formatUnits, getAddress } from 'ethers'
import { Datatoken, EscrowContract, ProviderInstance, approveWei } from '@oceanprotocol/lib'

const [stackPath, reportPath] = process.argv.slice(2)
const stack = JSON.parse(readFileSync(stackPath, 'utf8'))
const nodeUri = stack.providerUrl + '/node'
const chainId = stack.chainId
const ocean = getAddress(stack.contracts.OceanToken)
const report = { nodeUri, statusesSeen: [] }
// ethers 6 caches identical RPC reads for 250 ms: two quick transactions on automining anvil
// would reuse a nonce (DESIGN §6)
const chain = new JsonRpcProvider(stack.rpcUrl, undefined, { cacheTimeout: -1 })
const consumer = new Wallet(stack.consumerPrivateKey, chain)
const config = { chainId, nodeUri: stack.rpcUrl, oceanTokenAddress: ocean, gasFeeMultiplier: 1 }
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const one = (jobs) => (Array.isArray(jobs) ? jobs[0] : jobs)
const plain = (value) => JSON.parse(JSON.stringify(value, (_, v) => (typeof v === 'bigint' ? v.toString() : v)))

async function text(iterable) {
  const parts = []
  for await (const chunk of iterable) parts.push(Buffer.from(chunk))
  return Buffer.concat(parts).toString('utf8')
}

// what ocean.js's own tests do for a compute order (test/integration/helpers.ts handleComputeOrder)
async function order(quote, datatokenAddress, datatoken) {
  const fee = quote.providerFee
  if (fee && BigInt(fee.providerFeeAmount || 0) > 0n) {
    await approveWei(consumer, config, consumer.address, fee.providerFeeToken, datatokenAddress, fee.providerFeeAmount)
  }
  if (quote.validOrder && !fee) return quote.validOrder
  const tx = quote.validOrder
    ? await datatoken.reuseOrder(datatokenAddress, quote.validOrder, fee)
    : await datatoken.startOrder(datatokenAddress, consumer.address, 0, fee)
  return (await tx.wait()).hash
}

const fromBlock = (await chain.getBlockNumber()) + 1 // blocks mined from here on: this run's
const environments = await ProviderInstance.getComputeEnvironments(nodeUri)
const environment = environments.find((env) => (env.fees[String(chainId)] || []).some(
  (fee) => getAddress(fee.feeToken) === ocean && fee.prices.some((p) => p.price > 0)) &&
  !env.resources.some((r) => r.id === 'gpu'))
if (!environment) throw new Error('no CPU environment priced in OCEAN')
report.environment = environment
const resources = environment.resources.map((r) => ({ id: r.id, amount: r.min }))
const datasets = [{ documentId: stack.dataset.did, serviceId: stack.dataset.serviceId }]
const algorithm = { documentId: stack.algorithm.did, serviceId: stack.algorithm.serviceId }

// 1. initializeCompute with Ocean Node's payment: the providerFees and the escrow payment
const validUntil = Math.floor(Date.now() / 1000) + 3600
const init = await ProviderInstance.initializeCompute(datasets, algorithm, environment.id, ocean, validUntil, nodeUri,
  consumer.address, resources, chainId)
report.initialize = init
const payment = init.payment
if (!payment) throw new Error('initializeCompute answered no payment')

// 2. the consumer's escrow: approve, deposit what the lock may take, authorize the provider
const escrow = new EscrowContract(getAddress(payment.escrowAddress), consumer, chainId, config)
const datatoken = new Datatoken(consumer, chainId, config)
report.fundsBefore = plain(await escrow.getUserFunds(consumer.address, ocean))
const whole = formatUnits(payment.amount, 18) // EscrowContract takes whole tokens (amountToUnits)
await datatoken.approve(ocean, payment.escrowAddress, whole)
await escrow.deposit(ocean, whole)
report.fundsAfterDeposit = plain(await escrow.getUserFunds(consumer.address, ocean))
// authorize scales every argument by the token's decimals (prepareAuthorizeInputs): amounts in
// whole tokens, seconds and counts come out 10^18 times larger, as in ocean.js's own flow
await escrow.authorize(ocean, payment.payee, whole, String(payment.minLockSeconds), '10')
report.authorizations = plain(await escrow.getAuthorizations(ocean, consumer.address, payment.payee))

// 3. the datatoken orders, with the providerFees initializeCompute signed
const datasetTx = await order(init.datasets[0], stack.dataset.datatoken, datatoken)
const algorithmTx = await order(init.algorithm, stack.algorithm.datatoken, datatoken)

// 4. computeStart: the provider locks in escrow, then dispatches
const maxJobDuration = 300
const began = Date.now()
const started = one(await ProviderInstance.computeStart(nodeUri, consumer, environment.id,
  [{ ...datasets[0], transferTxId: datasetTx }], { ...algorithm, transferTxId: algorithmTx },
  maxJobDuration, ocean, resources, chainId))
report.startMs = Date.now() - began
report.started = started
report.fundsAfterStart = plain(await escrow.getUserFunds(consumer.address, ocean))

// 5. status 70 (the owner's token shows the escrow payment too), then the claim, then the result
const token = await ProviderInstance.generateAuthToken(consumer, nodeUri)
const deadline = Date.now() + 180000
let job
for (;;) {
  job = one(await ProviderInstance.computeStatus(nodeUri, token, started.jobId))
  if (!report.statusesSeen.includes(job.status)) report.statusesSeen.push(job.status)
  const settled = job.payment && ['claimed', 'cancelled', 'settle_failed'].includes(job.payment.status)
  if ([7, 8, 31, 32, 41, 62].includes(job.status) || (job.status === 70 && settled)) break
  if (Date.now() > deadline) throw new Error(`job ${started.jobId} stuck at ${job.status} (${JSON.stringify(job.payment)})`)
  await sleep(250)
}
report.finished = job
const output = (job.results || []).find((item) => item.type === 'output')
if (output) {
  report.result = await text(await ProviderInstance.getComputeResult(nodeUri, consumer, started.jobId, output.index))
}
report.fundsAfter = plain(await escrow.getUserFunds(consumer.address, ocean))

// 6. the Escrow's own events of this payer and payee in the blocks the run covered
const toBlock = await chain.getBlockNumber()
const events = {}
for (const name of ['Lock', 'Claimed', 'Canceled']) {
  const found = await escrow.contract.queryFilter(name, fromBlock, toBlock)
  events[name] = found.map((e) => plain({ tx: e.transactionHash, ...e.args.toObject() }))
    .filter((e) => getAddress(e.payer) === consumer.address && getAddress(e.payee) === getAddress(payment.payee))
}
report.events = events

writeFileSync(reportPath, JSON.stringify(report, null, 2))
chain.destroy()
