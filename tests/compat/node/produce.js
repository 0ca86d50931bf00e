'use strict'
/**
 * Produce records with kafkajs.
 *
 *   node produce.js BOOTSTRAP TOPIC [--compression none|gzip|snappy|lz4|zstd] [--per-send N] < messages.json
 *
 * stdin: a JSON array of {key, value, headers: [[name, value]], timestamp, partition} with key, value and
 * header values in base64 or null. Records go out in order, N per producer.send() (default: all in one),
 * with acks=-1. Result: {"ok": true, "sent": [{partition, baseOffset}, ...]} (one entry per batch).
 */
const { COMPRESSION, kafka, producer, toKafkajsMessage, run, options, readStdin } = require('./lib')

run(async args => {
  const [bootstrap, topic] = args
  const opts = options(args.slice(2))
  const compression = COMPRESSION[opts.compression || 'none']
  if (compression === undefined) throw new Error(`unknown compression ${opts.compression}`)
  const messages = JSON.parse(await readStdin()).map(toKafkajsMessage)
  const perSend = Number(opts['per-send'] || messages.length || 1)
  const p = producer(kafka(bootstrap))
  await p.connect()
  const sent = []
  try {
    for (let i = 0; i < messages.length; i += perSend) {
      const metadata = await p.send({ topic, acks: -1, compression, messages: messages.slice(i, i + perSend) })
      for (const m of metadata) {
        if (m.errorCode !== 0) throw new Error(`produce to ${topic}[${m.partition}]: error code ${m.errorCode}`)
        sent.push({ partition: m.partition, baseOffset: Number(m.baseOffset) })
      }
    }
  } finally {
    await p.disconnect()
  }
  return { sent }
})
