// JsonProducer publishes one cachewire change event in its JSON form with the plain Apache Kafka
// Java client, the way Spring Cloud Stream's Kafka binder sends it: the record key is the cache key
// (so the default partitioner's murmur2 puts it on the partition every cachewire node expects),
// the value is JSON, and a contentType header says application/json.
//
//   javac -cp "$(scripts/kafka.sh classpath)" -d /tmp/jp examples/java-json-producer/JsonProducer.java
//   java -cp "/tmp/jp:$(scripts/kafka.sh classpath)" JsonProducer 127.0.0.1:9092 cachewire.events user:1 7 UPSERT Ada
//
// Arguments: bootstrap servers, topic, key, version, op (UPSERT, DELETE or INVALIDATE), and for
// UPSERT an optional value (sent as a JSON string).
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.Properties;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.StringSerializer;

public class JsonProducer {
    public static void main(String[] args) throws Exception {
        if (args.length < 5) {
            System.err.println("usage: JsonProducer BOOTSTRAP TOPIC KEY VERSION OP [VALUE]");
            System.exit(2);
        }
        String key = args[2];
        StringBuilder json = new StringBuilder()
            .append("{\"key\":").append(quote(key))
            .append(",\"version\":").append(Long.parseUnsignedLong(args[3]))
            .append(",\"op\":").append(quote(args[4]))
            .append(",\"committed_at\":").append(quote(Instant.now().toString()))
            .append(",\"source\":\"java-json-producer\"");
        if (args.length > 5) {
            json.append(",\"value\":").append(quote(args[5]));
        }
        json.append('}');

        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            ProducerRecord<String, String> record = new ProducerRecord<>(args[1], key, json.toString());
            record.headers().add("contentType", "application/json".getBytes(StandardCharsets.UTF_8));
            RecordMetadata md = producer.send(record).get();
            System.out.println("sent " + key + "@" + args[3] + " to " + md.topic() + "/" + md.partition() + "@" + md.offset());
        }
    }

    static String quote(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"': b.append("\\\""); break;
                case '\\': b.append("\\\\"); break;
                default:
                    if (c < 0x20) {
                        b.append(String.format("\\u%04x", (int) c));
                    } else {
                        b.append(c);
                    }
            }
        }
        return b.append('"').toString();
    }
}
