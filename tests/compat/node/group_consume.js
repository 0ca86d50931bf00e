'use strict'
/**
 * Consume as a member of a consumer group with kafkajs's own consumer (subscribe + run), optionally
 * commit chosen offsets, then leave the group.
 *
 *   node group_consume.js BOOTSTRAP TOPIC GROUP --count N [--commit 0:3,1:5] [--timeout-ms 20000]
 *                         [--linger-ms 500] [--session-timeout-ms 6000] [--heartbeat-ms 500]
 *
 * Subscribes with fromBeginning (the start when the group has no committed offset), autoCommit off,
 * and collects records until N have arrived (or the timeout passes), then keeps collecting for
 * --linger-ms so that records beyond N show up in the result. With --commit it commits those offsets
 * (consumer.commitOffsets, i.e. OffsetCommit with the member's generation) while still in the group.
 * Then it disconnects (LeaveGroup) and reads the group's committed offsets with admin.fetchOffsets.
 *
 * Prints {"ok": true, "records": [...], "joins": [{memberId, generationId, isLeader, assignment}],
 * "committed": [{partition, offset}], "elapsedMs": ms until N records}.
 */
const { kafka, emit, run, options, b64 } = require('./lib')

run(async args => {
  const [bootstrap, topic, groupId] = args
  const opts = options(args.slice(3))
  const count = Number(opts.count || 1)
  const timeoutMs = Number(opts['timeout-ms'] || 20000)
  const lingerMs = Number(opts['linger-ms'] || 500)
  const commit = (opts.commit || '').split(',').filter(Boolean).map(pair => {
    const [partition, offset] = pair.split(':').map(Number)
    return { topic, partition, offset: String(offset) }
  })

  const client = kafka(bootstrap)
  const consumer = client.consumer({
    groupId,
    sessionTimeout: Number(opts['session-timeout-ms'] || 6000),
    heartbeatInterval: Number(opts['heartbeat-ms'] || 500),
    rebalanceTimeout: 10000,
    maxWaitTimeInMs: 100,
    retry: { retries: 5, initialRetryTime: 100 },
  })
  const joins = []
  consumer.on(consumer.events.GROUP_JOIN, e => {
    joins.push({
      memberId: e.payload.memberId,
      isLeader: e.payload.isLeader,
      groupProtocol: e.payload.groupProtocol,
      assignment: e.payload.memberAssignment,
    })
  })
  const crashes = []
  consumer.on(consumer.events.CRASH, e => crashes.push(String(e.payload.error)))

  const records = []
  let reached
  const enough = new Promise(resolve => { reached = resolve })
  const started = Date.now()
  let elapsedMs = null
  await consumer.connect()
  try {
    await consumer.subscribe({ topic, fromBeginning: true })
    await consumer.run({
      autoCommit: false,
      eachMessage: async ({ partition, message }) => {
        records.push({ partition, offset: Number(message.offset), value: b64(message.value) })
        if (records.length >= count && elapsedMs === null) {
          elapsedMs = Date.now() - started
          reached()
        }
      },
    })
    if (count > 0) {
      await Promise.race([enough, new Promise(resolve => setTimeout(resolve, timeoutMs))])
    }
    await new Promise(resolve => setTimeout(resolve, lingerMs))
    if (commit.length > 0) {
      await consumer.commitOffsets(commit)
      emit({ event: 'committed', offsets: commit })
    }
  } finally {
    await consumer.disconnect()
  }

  const admin = client.admin()
  await admin.connect()
  let committed
  try {
    const [offsets] = await admin.fetchOffsets({ groupId, topics: [topic] })
    committed = offsets.partitions.map(p => ({ partition: p.partition, offset: Number(p.offset) }))
  } finally {
    await admin.disconnect()
  }
  return { records, joins, committed, crashes, elapsedMs }
})
