package moldau.compat;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collection;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Scenario runner for Moldau's compatibility tests with Apache Kafka's own Java client.
 *
 * <p>Each scenario is one command line; it prints one JSON object on the last line of stdout:
 * {"ok": true, ...} with what it observed, or {"ok": false, "error": "..."}. Records are identified by
 * their keys and values ("key-N", "value-N"), base64 encoded in the output so any bytes survive.
 * Every wait is bounded.
 */
public final class JavaClient {
    private static final Duration BOUND = Duration.ofSeconds(30);

    private JavaClient() {
    }

    public static void main(String[] args) {
        Map<String, Object> out;
        try {
            out = run(args);
            out.put("ok", true);
        } catch (Throwable t) {
            out = new LinkedHashMap<>();
            out.put("ok", false);
            out.put("error", describe(t));
        }
        System.out.println(Json.write(out));
        System.out.flush();
        // Client threads (metadata refresh, heartbeats) must not keep the JVM alive.
        System.exit(0);
    }

    private static Map<String, Object> run(String[] args) throws Exception {
        if (args.length < 2) {
            throw new IllegalArgumentException("usage: JavaClient SCENARIO BOOTSTRAP [ARGS...]");
        }
        String bootstrap = args[1];
        switch (args[0]) {
            case "produce":
                return produce(bootstrap, args[2], Integer.parseInt(args[3]), args[4]);
            case "consume":
                return consume(bootstrap, args[2], args[3], Integer.parseInt(args[4]));
            case "admin":
                return admin(bootstrap, args[2], Integer.parseInt(args[3]));
            case "create-topic":
                return createTopic(bootstrap, args[2], Integer.parseInt(args[3]));
            case "transactions":
                return transactions(bootstrap, args[2], args[3], args[4]);
            case "txn-admin":
                return txnAdmin(bootstrap, args[2], args[3]);
            case "scram-admin":
                return scramAdmin(bootstrap, args[2]);
            case "quotas":
                return quotas(bootstrap, args[2], args[3]);
            case "acls":
                return acls(bootstrap, args[2], args[3]);
            case "compaction":
                return compaction(bootstrap, args[2]);
            case "produce-faults":
                return produceFaults(bootstrap, args[2], Integer.parseInt(args[3]), Integer.parseInt(args[4]));
            default:
                throw new IllegalArgumentException("unknown scenario " + args[0]);
        }
    }

    /**
     * A client's base settings: the bootstrap servers, plus the properties file named by the system
     * property moldau.client.config when set (security settings: security.protocol, sasl.*, ssl.*).
     */
    private static Properties clientProps(String bootstrap) {
        Properties props = new Properties();
        String extra = System.getProperty("moldau.client.config");
        if (extra != null) {
            try (java.io.Reader reader = java.nio.file.Files.newBufferedReader(java.nio.file.Path.of(extra))) {
                props.load(reader);
            } catch (java.io.IOException e) {
                throw new IllegalArgumentException("cannot read " + extra + ": " + e);
            }
        }
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        return props;
    }

    /**
     * The SCRAM admin APIs: upserts USER's SCRAM-SHA-256 credential (8192 iterations), describes it, deletes
     * it and lists the users left.
     */
    private static Map<String, Object> scramAdmin(String bootstrap, String user) throws Exception {
        Map<String, Object> out = new LinkedHashMap<>();
        try (Admin admin = admin(bootstrap)) {
            org.apache.kafka.clients.admin.ScramCredentialInfo info = new org.apache.kafka.clients.admin.ScramCredentialInfo(
                org.apache.kafka.clients.admin.ScramMechanism.SCRAM_SHA_256, 8192);
            admin.alterUserScramCredentials(List.of(new org.apache.kafka.clients.admin.UserScramCredentialUpsertion(
                user, info, "java-secret"))).all().get(BOUND.toMillis(), TimeUnit.MILLISECONDS);
            org.apache.kafka.clients.admin.UserScramCredentialsDescription described = admin
                .describeUserScramCredentials(List.of(user)).description(user)
                .get(BOUND.toMillis(), TimeUnit.MILLISECONDS);
            List<String> mechanisms = new ArrayList<>();
            for (org.apache.kafka.clients.admin.ScramCredentialInfo c : described.credentialInfos()) {
                mechanisms.add(c.mechanism().mechanismName() + ":" + c.iterations());
            }
            out.put("described", mechanisms);
            admin.alterUserScramCredentials(List.of(new org.apache.kafka.clients.admin.UserScramCredentialDeletion(
                user, org.apache.kafka.clients.admin.ScramMechanism.SCRAM_SHA_256)))
                .all().get(BOUND.toMillis(), TimeUnit.MILLISECONDS);
            out.put("usersAfter", new ArrayList<>(admin.describeUserScramCredentials().users()
                .get(BOUND.toMillis(), TimeUnit.MILLISECONDS)));
        }
        return out;
    }

    /**
     * The client quota admin APIs: sets producer_byte_rate and consumer_byte_rate for USER with CLIENT_ID
     * and a request_percentage for the default user, describes the user's quotas, then removes the first.
     */
    private static Map<String, Object> quotas(String bootstrap, String user, String clientId) throws Exception {
        Map<String, Object> out = new LinkedHashMap<>();
        org.apache.kafka.common.quota.ClientQuotaEntity entity = new org.apache.kafka.common.quota.ClientQuotaEntity(
            Map.of(org.apache.kafka.common.quota.ClientQuotaEntity.USER, user,
                   org.apache.kafka.common.quota.ClientQuotaEntity.CLIENT_ID, clientId));
        java.util.HashMap<String, String> defaultUser = new java.util.HashMap<>();
        defaultUser.put(org.apache.kafka.common.quota.ClientQuotaEntity.USER, null);
        org.apache.kafka.common.quota.ClientQuotaEntity defaults =
            new org.apache.kafka.common.quota.ClientQuotaEntity(defaultUser);
        try (Admin admin = admin(bootstrap)) {
            admin.alterClientQuotas(List.of(
                new org.apache.kafka.common.quota.ClientQuotaAlteration(entity, List.of(
                    new org.apache.kafka.common.quota.ClientQuotaAlteration.Op("producer_byte_rate", 1048576.0),
                    new org.apache.kafka.common.quota.ClientQuotaAlteration.Op("consumer_byte_rate", 2097152.0))),
                new org.apache.kafka.common.quota.ClientQuotaAlteration(defaults, List.of(
                    new org.apache.kafka.common.quota.ClientQuotaAlteration.Op("request_percentage", 50.0)))))
                .all().get(BOUND.toMillis(), TimeUnit.MILLISECONDS);
            Map<org.apache.kafka.common.quota.ClientQuotaEntity, Map<String, Double>> found = admin.describeClientQuotas(
                org.apache.kafka.common.quota.ClientQuotaFilter.contains(List.of(
                    org.apache.kafka.common.quota.ClientQuotaFilterComponent.ofEntity(
                        org.apache.kafka.common.quota.ClientQuotaEntity.USER, user))))
                .entities().get(BOUND.toMillis(), TimeUnit.MILLISECONDS);
            out.put("described", found.get(entity));
            Map<org.apache.kafka.common.quota.ClientQuotaEntity, Map<String, Double>> all = admin.describeClientQuotas(
                org.apache.kafka.common.quota.ClientQuotaFilter.all()).entities()
                .get(BOUND.toMillis(), TimeUnit.MILLISECONDS);
            out.put("defaultUser", all.get(defaults));
            admin.alterClientQuotas(List.of(new org.apache.kafka.common.quota.ClientQuotaAlteration(entity, List.of(
                new org.apache.kafka.common.quota.ClientQuotaAlteration.Op("producer_byte_rate", null)))))
                .all().get(BOUND.toMillis(), TimeUnit.MILLISECONDS);
            out.put("after", admin.describeClientQuotas(org.apache.kafka.common.quota.ClientQuotaFilter.all())
                .entities().get(BOUND.toMillis(), TimeUnit.MILLISECONDS).get(entity));
        }
        return out;
    }

    /**
     * The ACL admin APIs: creates a LITERAL ALLOW READ on TOPIC and a PREFIXED DENY ALL on groups starting
     * with TOPIC for PRINCIPAL, describes and deletes them by principal; reports the counts.
     */
    private static Map<String, Object> acls(String bootstrap, String topic, String principal) throws Exception {
        Map<String, Object> out = new LinkedHashMap<>();
        try (Admin admin = admin(bootstrap)) {
            List<org.apache.kafka.common.acl.AclBinding> bindings = List.of(
                new org.apache.kafka.common.acl.AclBinding(
                    new org.apache.kafka.common.resource.ResourcePattern(
                        org.apache.kafka.common.resource.ResourceType.TOPIC, topic,
                        org.apache.kafka.common.resource.PatternType.LITERAL),
                    new org.apache.kafka.common.acl.AccessControlEntry(principal, "*",
                        org.apache.kafka.common.acl.AclOperation.READ,
                        org.apache.kafka.common.acl.AclPermissionType.ALLOW)),
                new org.apache.kafka.common.acl.AclBinding(
                    new org.apache.kafka.common.resource.ResourcePattern(
                        org.apache.kafka.common.resource.ResourceType.GROUP, topic,
                        org.apache.kafka.common.resource.PatternType.PREFIXED),
                    new org.apache.kafka.common.acl.AccessControlEntry(principal, "*",
                        org.apache.kafka.common.acl.AclOperation.ALL,
                        org.apache.kafka.common.acl.AclPermissionType.DENY)));
            admin.createAcls(bindings).all().get(BOUND.toMillis(), TimeUnit.MILLISECONDS);
            out.put("created", bindings.size());
            org.apache.kafka.common.acl.AclBindingFilter mine = new org.apache.kafka.common.acl.AclBindingFilter(
                org.apache.kafka.common.resource.ResourcePatternFilter.ANY,
                new org.apache.kafka.common.acl.AccessControlEntryFilter(principal, null,
                    org.apache.kafka.common.acl.AclOperation.ANY,
                    org.apache.kafka.common.acl.AclPermissionType.ANY));
            out.put("described", admin.describeAcls(mine).values().get(BOUND.toMillis(), TimeUnit.MILLISECONDS).size());
            out.put("deleted", admin.deleteAcls(List.of(mine)).all().get(BOUND.toMillis(), TimeUnit.MILLISECONDS).size());
            out.put("after", admin.describeAcls(mine).values().get(BOUND.toMillis(), TimeUnit.MILLISECONDS).size());
        }
        return out;
    }

    /** An idempotent acks=all producer sends COUNT keyed records with a header; reports every ack. */
    private static Map<String, Object> produce(String bootstrap, String topic, int count, String compression)
            throws Exception {
        Properties props = clientProps(bootstrap);
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        props.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, compression);
        props.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        props.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, String.valueOf(BOUND.toMillis()));
        props.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        List<Map<String, Object>> acked = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> producer =
                     new KafkaProducer<>(props, new ByteArraySerializer(), new ByteArraySerializer())) {
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            for (int i = 0; i < count; i++) {
                ProducerRecord<byte[], byte[]> record = new ProducerRecord<>(topic, utf8("key-" + i), utf8("value-" + i));
                record.headers().add("n", utf8(String.valueOf(i)));
                sent.add(producer.send(record));
            }
            producer.flush();
            for (Future<RecordMetadata> future : sent) {
                RecordMetadata md = future.get(BOUND.toMillis(), TimeUnit.MILLISECONDS);
                Map<String, Object> ack = new LinkedHashMap<>();
                ack.put("partition", md.partition());
                ack.put("offset", md.offset());
                acked.add(ack);
            }
        }
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("acked", acked);
        return out;
    }

    /**
     * An acks=all producer sends COUNT records ("value-N") to partition 0, one at a time, while the broker
     * injects faults. With RETRIES &gt; 0 it is idempotent and retries quickly; with 0 it is not (the client
     * requires retries for idempotence) and every error reaches the caller. Reports each record's ack
     * offset or exception class, and the client's record-retry-total metric.
     */
    private static Map<String, Object> produceFaults(String bootstrap, String topic, int count, int retries)
            throws Exception {
        Properties props = clientProps(bootstrap);
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, String.valueOf(retries > 0));
        props.put(ProducerConfig.RETRIES_CONFIG, String.valueOf(retries));
        props.put(ProducerConfig.RETRY_BACKOFF_MS_CONFIG, "50");
        props.put(ProducerConfig.RETRY_BACKOFF_MAX_MS_CONFIG, "200");
        props.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        props.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "20000");
        props.put(ProducerConfig.LINGER_MS_CONFIG, "0");
        List<Object> results = new ArrayList<>();
        double retried;
        try (KafkaProducer<byte[], byte[]> producer =
                     new KafkaProducer<>(props, new ByteArraySerializer(), new ByteArraySerializer())) {
            for (int i = 0; i < count; i++) {
                Future<RecordMetadata> sent = producer.send(new ProducerRecord<>(topic, 0, null, utf8("value-" + i)));
                try {
                    results.add(sent.get(BOUND.toMillis(), TimeUnit.MILLISECONDS).offset());
                } catch (ExecutionException e) {
                    results.add(e.getCause().getClass().getSimpleName());
                }
            }
            retried = producer.metrics().entrySet().stream()
                    .filter(e -> e.getKey().name().equals("record-retry-total")
                            && e.getKey().group().equals("producer-metrics"))
                    .mapToDouble(e -> ((Number) e.getValue().metricValue()).doubleValue())
                    .sum();
        }
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("results", results);
        out.put("record_retry_total", retried);
        return out;
    }

    /** A group member subscribes, reads COUNT records from the earliest offsets, commits, and leaves. */
    private static Map<String, Object> consume(String bootstrap, String topic, String group, int count) {
        Properties props = clientProps(bootstrap);
        props.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
        List<Map<String, Object>> records = new ArrayList<>();
        Map<String, Object> out = new LinkedHashMap<>();
        try (KafkaConsumer<byte[], byte[]> consumer =
                     new KafkaConsumer<>(props, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            consumer.subscribe(List.of(topic));
            long deadline = System.nanoTime() + BOUND.toNanos();
            while (records.size() < count && System.nanoTime() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200))) {
                    records.add(record(r));
                }
            }
            consumer.commitSync(BOUND);
            Set<TopicPartition> assigned = consumer.assignment();
            Map<TopicPartition, OffsetAndMetadata> committed = consumer.committed(assigned, BOUND);
            Map<String, Object> commits = new LinkedHashMap<>();
            for (Map.Entry<TopicPartition, OffsetAndMetadata> e : committed.entrySet()) {
                commits.put(String.valueOf(e.getKey().partition()), e.getValue() == null ? null : e.getValue().offset());
            }
            out.put("committed", commits);
        }
        out.put("records", records);
        return out;
    }

    /** The admin client's topic life cycle: create with a config, describe, grow, delete records, delete. */
    private static Map<String, Object> admin(String bootstrap, String topic, int partitions) throws Exception {
        Map<String, Object> out = new LinkedHashMap<>();
        try (Admin admin = admin(bootstrap)) {
            DescribeClusterResult cluster = admin.describeCluster();
            out.put("cluster_id", cluster.clusterId().get());
            out.put("nodes", cluster.nodes().get().size());
            NewTopic newTopic = new NewTopic(topic, partitions, (short) 1).configs(Map.of("retention.ms", "123456789"));
            admin.createTopics(List.of(newTopic)).all().get();
            out.put("listed", admin.listTopics().names().get().contains(topic));
            out.put("partitions", describe(admin, topic).partitions().size());
            ConfigResource resource = new ConfigResource(ConfigResource.Type.TOPIC, topic);
            Config config = admin.describeConfigs(List.of(resource)).all().get().get(resource);
            out.put("retention_ms", config.get("retention.ms").value());
            admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(partitions + 2))).all().get();
            out.put("partitions_after_increase", describe(admin, topic).partitions().size());

            try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(
                    Map.of(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap),
                    new ByteArraySerializer(), new ByteArraySerializer())) {
                for (int i = 0; i < 10; i++) {
                    producer.send(new ProducerRecord<>(topic, 0, null, utf8("value-" + i))).get();
                }
            }
            TopicPartition p0 = new TopicPartition(topic, 0);
            admin.deleteRecords(Map.of(p0, RecordsToDelete.beforeOffset(4))).all().get();
            ListOffsetsResult earliest = admin.listOffsets(Map.of(p0, OffsetSpec.earliest()));
            ListOffsetsResult latest = admin.listOffsets(Map.of(p0, OffsetSpec.latest()));
            out.put("earliest_after_delete_records", earliest.partitionResult(p0).get().offset());
            out.put("latest", latest.partitionResult(p0).get().offset());
            admin.deleteTopics(List.of(topic)).all().get();
            out.put("listed_after_delete", admin.listTopics().names().get().contains(topic));
        }
        return out;
    }

    /** One CreateTopics request; reports the exception a refusal raises (class name and message). */
    private static Map<String, Object> createTopic(String bootstrap, String topic, int partitions) throws Exception {
        Map<String, Object> out = new LinkedHashMap<>();
        try (Admin admin = admin(bootstrap)) {
            try {
                admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 1))).all().get();
                out.put("created", true);
            } catch (ExecutionException e) {
                out.put("created", false);
                out.put("exception", e.getCause().getClass().getSimpleName());
                out.put("message", String.valueOf(e.getCause().getMessage()));
            }
        }
        return out;
    }

    /**
     * Consume-transform-produce in three transactions over 20 input records: 10 committed, 5 aborted, then
     * the remaining 10 committed (resuming from the committed position). Reports what a read_committed
     * and a read_uncommitted consumer read from the output, and the group's committed input offset.
     */
    private static Map<String, Object> transactions(String bootstrap, String in, String out, String group)
            throws Exception {
        try (KafkaProducer<byte[], byte[]> plain = new KafkaProducer<>(
                Map.of(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap), new ByteArraySerializer(),
                new ByteArraySerializer())) {
            for (int i = 0; i < 20; i++) {
                plain.send(new ProducerRecord<>(in, 0, null, utf8("in-" + i))).get();
            }
        }
        String transactionalId = group + "-txn";
        ctpRound(bootstrap, in, out, group, transactionalId, 10, true);
        ctpRound(bootstrap, in, out, group, transactionalId, 5, false);
        ctpRound(bootstrap, in, out, group, transactionalId, 10, true);
        Map<String, Object> result = new LinkedHashMap<>();
        result.put("read_committed", readValues(bootstrap, out, "read_committed", 20));
        result.put("read_uncommitted", readValues(bootstrap, out, "read_uncommitted", 25));
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(consumerProps(bootstrap, group,
                "read_committed"), new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            OffsetAndMetadata committed = consumer.committed(Set.of(new TopicPartition(in, 0)), BOUND)
                    .get(new TopicPartition(in, 0));
            result.put("committed", committed == null ? null : committed.offset());
        }
        return result;
    }

    private static void ctpRound(String bootstrap, String in, String out, String group, String transactionalId,
                                 int count, boolean commit) {
        Properties props = clientProps(bootstrap);
        props.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, transactionalId);
        props.put(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, "10000");
        props.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, String.valueOf(BOUND.toMillis()));
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(consumerProps(bootstrap, group,
                "read_committed"), new ByteArrayDeserializer(), new ByteArrayDeserializer());
             KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(props, new ByteArraySerializer(),
                     new ByteArraySerializer())) {
            producer.initTransactions();
            consumer.subscribe(List.of(in));
            List<ConsumerRecord<byte[], byte[]>> taken = new ArrayList<>();
            long deadline = System.nanoTime() + BOUND.toNanos();
            while (taken.size() < count && System.nanoTime() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200))) {
                    if (taken.size() < count) {
                        taken.add(r);
                    }
                }
            }
            if (taken.size() < count) {
                throw new IllegalStateException("read " + taken.size() + " of " + count + " input records");
            }
            producer.beginTransaction();
            for (ConsumerRecord<byte[], byte[]> r : taken) {
                String value = new String(r.value(), StandardCharsets.UTF_8).replace("in-", "out-");
                producer.send(new ProducerRecord<>(out, 0, null, utf8(value)));
            }
            long next = taken.get(taken.size() - 1).offset() + 1;
            producer.sendOffsetsToTransaction(Map.of(new TopicPartition(in, 0), new OffsetAndMetadata(next)),
                    consumer.groupMetadata());
            if (commit) {
                producer.commitTransaction();
            } else {
                producer.flush();
                producer.abortTransaction();
            }
        }
    }

    private static Properties consumerProps(String bootstrap, String group, String isolation) {
        Properties props = clientProps(bootstrap);
        props.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
        props.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
        return props;
    }

    /** Values read from partition 0 of TOPIC from the start, until COUNT arrived and a poll came back empty. */
    private static List<String> readValues(String bootstrap, String topic, String isolation, int count) {
        List<String> values = new ArrayList<>();
        Properties props = consumerProps(bootstrap, topic + "-reader-" + isolation, isolation);
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props, new ByteArrayDeserializer(),
                new ByteArrayDeserializer())) {
            TopicPartition tp = new TopicPartition(topic, 0);
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            long deadline = System.nanoTime() + BOUND.toNanos();
            while (System.nanoTime() < deadline) {
                var polled = consumer.poll(Duration.ofMillis(500));
                for (ConsumerRecord<byte[], byte[]> r : polled) {
                    values.add(new String(r.value(), StandardCharsets.UTF_8));
                }
                if (polled.isEmpty() && values.size() >= count) {
                    break;
                }
            }
        }
        return values;
    }

    /**
     * With a transaction left open on TOPIC by TRANSACTIONAL_ID, the admin client's views of it:
     * describeTransactions, listTransactions and describeProducers.
     */
    private static Map<String, Object> txnAdmin(String bootstrap, String topic, String transactionalId)
            throws Exception {
        Properties props = clientProps(bootstrap);
        props.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, transactionalId);
        props.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, String.valueOf(BOUND.toMillis()));
        Map<String, Object> out = new LinkedHashMap<>();
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(props, new ByteArraySerializer(),
                new ByteArraySerializer());
             Admin admin = admin(bootstrap)) {
            producer.initTransactions();
            producer.beginTransaction();
            producer.send(new ProducerRecord<>(topic, 0, null, utf8("open"))).get();
            var description = admin.describeTransactions(List.of(transactionalId)).description(transactionalId).get();
            out.put("state", description.state().toString());
            out.put("producer_id", description.producerId());
            out.put("epoch", description.producerEpoch());
            out.put("timeout_ms", description.transactionTimeoutMs());
            List<String> partitions = new ArrayList<>();
            for (TopicPartition tp : description.topicPartitions()) {
                partitions.add(tp.toString());
            }
            out.put("partitions", partitions);
            List<String> listed = new ArrayList<>();
            for (var listing : admin.listTransactions().all().get()) {
                if (listing.transactionalId().equals(transactionalId)) {
                    listed.add(listing.state().toString());
                }
            }
            out.put("listed", listed);
            TopicPartition tp = new TopicPartition(topic, 0);
            List<Map<String, Object>> producers = new ArrayList<>();
            for (var p : admin.describeProducers(List.of(tp)).partitionResult(tp).get().activeProducers()) {
                Map<String, Object> m = new LinkedHashMap<>();
                m.put("producer_id", p.producerId());
                m.put("epoch", p.producerEpoch());
                m.put("txn_start_offset", p.currentTransactionStartOffset().orElse(-1L));
                producers.add(m);
            }
            out.put("producers", producers);
            producer.abortTransaction();
        }
        return out;
    }

    /**
     * Log compaction: creates TOPIC compacted with small segments, writes five keys six times each (one
     * acks=all send at a time), a tombstone for key k4 and filler records that roll its segment, then reads
     * the partition from its start again and again until every key k0-k4 is seen once. Prints the offsets
     * the producer got for each key's last record and what the final read saw.
     */
    private static Map<String, Object> compaction(String bootstrap, String topic) throws Exception {
        Map<String, Object> out = new LinkedHashMap<>();
        try (Admin admin = admin(bootstrap)) {
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1).configs(Map.of(
                "cleanup.policy", "compact", "segment.bytes", "1024", "min.cleanable.dirty.ratio", "0.01",
                "delete.retention.ms", "86400000")))).all().get(BOUND.toMillis(), TimeUnit.MILLISECONDS);
        }
        Properties producerProps = clientProps(bootstrap);
        producerProps.put(ProducerConfig.ACKS_CONFIG, "all");
        producerProps.put(ProducerConfig.LINGER_MS_CONFIG, "0");
        Map<String, Object> latest = new LinkedHashMap<>();
        String padding = "x".repeat(60);
        try (KafkaProducer<byte[], byte[]> producer =
                     new KafkaProducer<>(producerProps, new ByteArraySerializer(), new ByteArraySerializer())) {
            List<String[]> writes = new ArrayList<>();
            for (int round = 0; round < 6; round++) {
                for (int k = 0; k < 5; k++) {
                    writes.add(new String[] {"k" + k, "v" + k + "-" + round + "-" + padding});
                }
            }
            writes.add(new String[] {"k4", null});
            for (int i = 0; i < 20; i++) {
                writes.add(new String[] {"filler", "f" + i + "-" + padding});
            }
            for (String[] w : writes) {
                RecordMetadata md = producer.send(new ProducerRecord<>(topic, 0, utf8(w[0]),
                        w[1] == null ? null : utf8(w[1]))).get(BOUND.toMillis(), TimeUnit.MILLISECONDS);
                latest.put(w[0], md.offset());
            }
        }
        out.put("latest", latest);
        Properties props = consumerProps(bootstrap, topic + "-reader", "read_uncommitted");
        List<Map<String, Object>> seen = new ArrayList<>();
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props, new ByteArrayDeserializer(),
                new ByteArrayDeserializer())) {
            TopicPartition tp = new TopicPartition(topic, 0);
            consumer.assign(List.of(tp));
            long deadline = System.nanoTime() + BOUND.toNanos();
            boolean compacted = false;
            while (!compacted && System.nanoTime() < deadline) {
                consumer.seekToBeginning(List.of(tp));
                long end = consumer.endOffsets(List.of(tp), BOUND).get(tp);
                seen = new ArrayList<>();
                while (consumer.position(tp, BOUND) < end && System.nanoTime() < deadline) {
                    for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200))) {
                        seen.add(record(r));
                    }
                }
                Map<String, Integer> counts = new LinkedHashMap<>();
                for (Map<String, Object> r : seen) {
                    counts.merge((String) r.get("key"), 1, Integer::sum);
                }
                compacted = true;
                for (int k = 0; k < 5; k++) {
                    compacted &= counts.getOrDefault(b64(utf8("k" + k)), 0) == 1;
                }
            }
            out.put("compacted", compacted);
        }
        out.put("records", seen);
        return out;
    }

    private static Admin admin(String bootstrap) {
        Properties props = clientProps(bootstrap);
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, String.valueOf(BOUND.toMillis()));
        return Admin.create(props);
    }

    private static TopicDescription describe(Admin admin, String topic) throws Exception {
        return admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
    }

    private static Map<String, Object> record(ConsumerRecord<byte[], byte[]> r) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("partition", r.partition());
        m.put("offset", r.offset());
        m.put("key", b64(r.key()));
        m.put("value", b64(r.value()));
        List<Object> headers = new ArrayList<>();
        for (Header h : r.headers()) {
            headers.add(List.of(h.key(), b64(h.value()) == null ? "" : b64(h.value())));
        }
        m.put("headers", headers);
        m.put("timestamp", r.timestamp());
        return m;
    }

    private static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    private static String b64(byte[] data) {
        return data == null ? null : Base64.getEncoder().encodeToString(data);
    }

    private static String describe(Throwable t) {
        StringBuilder sb = new StringBuilder();
        for (Throwable c = t; c != null; c = c.getCause()) {
            if (sb.length() > 0) {
                sb.append(" <- ");
            }
            sb.append(c.getClass().getName()).append(": ").append(c.getMessage());
        }
        return sb.toString();
    }

    /** Just enough JSON for the scenario results: maps, lists, strings, numbers, booleans, null. */
    static final class Json {
        private Json() {
        }

        static String write(Object value) {
            StringBuilder sb = new StringBuilder();
            append(sb, value);
            return sb.toString();
        }

        private static void append(StringBuilder sb, Object value) {
            if (value == null) {
                sb.append("null");
            } else if (value instanceof String s) {
                string(sb, s);
            } else if (value instanceof Number || value instanceof Boolean) {
                sb.append(value);
            } else if (value instanceof Map<?, ?> map) {
                sb.append('{');
                Iterator<? extends Map.Entry<?, ?>> it = map.entrySet().iterator();
                while (it.hasNext()) {
                    Map.Entry<?, ?> e = it.next();
                    string(sb, String.valueOf(e.getKey()));
                    sb.append(':');
                    append(sb, e.getValue());
                    if (it.hasNext()) {
                        sb.append(',');
                    }
                }
                sb.append('}');
            } else if (value instanceof Collection<?> list) {
                sb.append('[');
                Iterator<?> it = list.iterator();
                while (it.hasNext()) {
                    append(sb, it.next());
                    if (it.hasNext()) {
                        sb.append(',');
                    }
                }
                sb.append(']');
            } else {
                string(sb, value.toString());
            }
        }

        private static void string(StringBuilder sb, String s) {
            sb.append('"');
            for (int i = 0; i < s.length(); i++) {
                char c = s.charAt(i);
                switch (c) {
                    case '"' -> sb.append("\\\"");
                    case '\\' -> sb.append("\\\\");
                    case '\n' -> sb.append("\\n");
                    case '\r' -> sb.append("\\r");
                    case '\t' -> sb.append("\\t");
                    default -> {
                        if (c < 0x20) {
                            sb.append(String.format("\\u%04x", (int) c));
                        } else {
                            sb.append(c);
                        }
                    }
                }
            }
            sb.append('"');
        }
    }
}
