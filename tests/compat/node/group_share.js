'use strict'
/**
 * Several kafkajs consumers share one group on a new topic; once their assignments cover every
 * partition exactly once, one producer.send (acks=-1) writes N records to each partition; the script
 * then waits until every record has reached some member (or the timeout passes), lingers so that
 * duplicates show up too, and reports who got what (issue 12, item 8).
 *
 *   node group_share.js BOOTSTRAP TOPIC GROUP [--partitions 6] [--members 3] [--per-partition 20]
 *                       [--timeout-ms 30000] [--linger-ms 1000] [--debug 1]
 *
 * Each member is its own kafkajs client: fromBeginning, autoCommitThreshold 1, sessionTimeout 10000,
 * heartbeatInterval 1000, maxWaitTimeInMs 500. Values are "p<partition>-<i>".
 *
 * Prints {"ok": true, "produced": n, "coveredMs": ms, "members": [{member, memberId,
 * joins: [{memberId, isLeader, assignment, at}], records: [[partition, offset, value]],
 * commits: [{partition, offset}], crashes}]}. With --debug 1 the kafkajs instrumentation events
 * (join, rebalancing, fetch, batch, commit, crash) of every member go to stderr as JSON lines.
 */
const { kafka, producer, run, options } = require('./lib')

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

run(async args => {
  const [bootstrap, topic, groupId] = args
  const opts = options(args.slice(3))
  const partitions = Number(opts.partitions || 6)
  const memberCount = Number(opts.members || 3)
  const perPartition = Number(opts['per-partition'] || 20)
  const timeoutMs = Number(opts['timeout-ms'] || 30000)
  const lingerMs = Number(opts['linger-ms'] || 1000)
  const debug = opts.debug === '1'
  const trace = obj => {
    if (debug) process.stderr.write(JSON.stringify({ t: Date.now(), ...obj }) + '\n')
  }

  const admin = kafka(bootstrap).admin()
  await admin.connect()
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions: partitions }], waitForLeaders: true })
  } finally {
    await admin.disconnect()
  }

  const members = []
  for (let m = 0; m < memberCount; m++) {
    const consumer = kafka(bootstrap).consumer({
      groupId,
      sessionTimeout: 10000,
      heartbeatInterval: 1000,
      maxWaitTimeInMs: 500,
      retry: { retries: 5, initialRetryTime: 100 },
    })
    const state = { member: m, consumer, memberId: null, current: [], joins: [], records: [], commits: [], crashes: [] }
    const { events } = consumer
    consumer.on(events.GROUP_JOIN, e => {
      const assigned = (e.payload.memberAssignment[topic] || []).slice().sort((a, b) => a - b)
      state.memberId = e.payload.memberId
      state.current = assigned
      state.joins.push({ memberId: e.payload.memberId, isLeader: e.payload.isLeader, assignment: assigned, at: Date.now() })
      trace({ member: m, event: 'join', memberId: e.payload.memberId, assignment: assigned })
    })
    consumer.on(events.COMMIT_OFFSETS, e => {
      for (const t of e.payload.topics) {
        for (const p of t.partitions) state.commits.push({ partition: Number(p.partition), offset: Number(p.offset) })
      }
      trace({ member: m, event: 'commit', generationId: e.payload.generationId, topics: e.payload.topics })
    })
    consumer.on(events.REBALANCING, () => trace({ member: m, event: 'rebalancing' }))
    consumer.on(events.FETCH, e => trace({ member: m, event: 'fetch', duration: e.payload.duration }))
    consumer.on(events.START_BATCH_PROCESS, e => trace({
      member: m, event: 'batch', partition: e.payload.partition, firstOffset: e.payload.firstOffset,
      lastOffset: e.payload.lastOffset, size: e.payload.batchSize }))
    consumer.on(events.CRASH, e => {
      state.crashes.push(String(e.payload.error))
      trace({ member: m, event: 'crash', error: String(e.payload.error) })
    })
    members.push(state)
  }

  // Connected before the members start, so that the send follows the moment of cover closely.
  const p = producer(kafka(bootstrap))
  await p.connect()
  const started = Date.now()
  const deadline = started + timeoutMs
  try {
    for (const s of members) {
      await s.consumer.connect()
      await s.consumer.subscribe({ topic, fromBeginning: true })
      await s.consumer.run({
        autoCommitThreshold: 1,
        eachMessage: async ({ partition, message }) => {
          s.records.push([partition, Number(message.offset), message.value.toString()])
        },
      })
    }

    // Every member has an assignment and together they cover each partition exactly once.
    const covered = () => {
      if (members.some(s => s.current.length === 0)) return false
      const all = members.flatMap(s => s.current).sort((a, b) => a - b)
      return all.length === partitions && all.every((partition, i) => partition === i)
    }
    while (!covered() && Date.now() < deadline) await sleep(20)
    if (!covered()) {
      throw new Error(`the assignments never covered the ${partitions} partitions within ${timeoutMs} ms: ` +
                      JSON.stringify(members.map(s => s.current)))
    }
    const coveredMs = Date.now() - started
    trace({ event: 'covered', assignments: members.map(s => s.current) })

    const messages = []
    for (let i = 0; i < perPartition; i++) {
      for (let partition = 0; partition < partitions; partition++) messages.push({ partition, value: `p${partition}-${i}` })
    }
    await p.send({ topic, acks: -1, messages })
    trace({ event: 'produced', count: messages.length })

    const distinct = () => new Set(members.flatMap(s => s.records.map(([pt, off]) => `${pt}:${off}`))).size
    while (distinct() < messages.length && Date.now() < deadline) await sleep(20)
    await sleep(lingerMs)

    return {
      produced: messages.length,
      coveredMs,
      members: members.map(s => ({ member: s.member, memberId: s.memberId, joins: s.joins, records: s.records,
                                   commits: s.commits, crashes: s.crashes })),
    }
  } finally {
    await p.disconnect()
    for (const s of members) await s.consumer.disconnect()
  }
})
