'use strict'
/**
 * A kafkajs transactional producer: three transactions of 10 records each over the topic's two
 * partitions; the first and third commit (with offsets for GROUP: partition 0 at 42), the second aborts
 * (with offsets at 99, which must never become visible).
 *
 *   node transaction.js BOOTSTRAP TOPIC GROUP TRANSACTIONAL_ID
 *
 * Values are "commit-R-I" and "abort-R-I" for round R, record I. Result: {"ok": true}.
 */
const { kafka, run } = require('./lib')

run(async args => {
  const [bootstrap, topic, group, transactionalId] = args
  const producer = kafka(bootstrap).producer({ transactionalId, idempotent: true, maxInFlightRequests: 1 })
  await producer.connect()
  try {
    for (const round of [0, 1, 2]) {
      const commit = round !== 1
      const txn = await producer.transaction()
      const messages = []
      for (let i = 0; i < 10; i++) {
        messages.push({ partition: i % 2, value: `${commit ? 'commit' : 'abort'}-${round}-${i}` })
      }
      await txn.send({ topic, messages })
      await txn.sendOffsets({
        consumerGroupId: group,
        topics: [{ topic, partitions: [{ partition: 0, offset: commit ? '42' : '99' }] }],
      })
      if (commit) await txn.commit()
      else await txn.abort()
    }
  } finally {
    await producer.disconnect()
  }
  return {}
})
