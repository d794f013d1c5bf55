package io.cachewire.example;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.cloud.stream.function.StreamBridge;
import org.springframework.http.ResponseEntity;
import org.springframework.kafka.support.KafkaHeaders;
import org.springframework.messaging.support.MessageBuilder;
import org.springframework.stereotype.Service;
import org.springframework.web.bind.annotation.DeleteMapping;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.PathVariable;
import org.springframework.web.bind.annotation.PutMapping;
import org.springframework.web.bind.annotation.RequestBody;
import org.springframework.web.bind.annotation.RestController;

/**
 * A users service that publishes each change as a cachewire JSON change event through Spring
 * Cloud Stream: the service method (source) sends to the users-out-0 binding (channel), whose
 * Kafka binder writes it to the topic. PUT and DELETE /users/{id} change a user; GET
 * /cache/user:{id} is the nodes' HTTP origin (the value, and its version in Cachewire-Version).
 *
 * It keeps its data in memory to stay small: a real service commits to its database first and
 * publishes from an outbox (package outbox, cmd/relay), so that a crash cannot lose the event.
 */
@SpringBootApplication
public class UsersStreamApplication {
    public static void main(String[] args) {
        SpringApplication.run(UsersStreamApplication.class, args);
    }

    /** The JSON form of a cachewire change event (docs/producers.md). */
    public record ChangeEvent(String key, long version, String op, String value, String source) {}

    record User(String name, long version, boolean deleted) {}

    @Service
    public static class Users {
        private static final Logger log = LoggerFactory.getLogger(Users.class);
        private final StreamBridge bridge;
        private final AtomicLong versions = new AtomicLong(); // one sequence for every row
        private final Map<String, User> rows = new ConcurrentHashMap<>();

        public Users(StreamBridge bridge) {
            this.bridge = bridge;
        }

        /** Changes a user and publishes the change; returns its version. */
        public synchronized long put(String id, String name, boolean delete) {
            long v = versions.incrementAndGet();
            rows.put(id, new User(name, v, delete));
            String key = "user:" + id;
            ChangeEvent e = new ChangeEvent(key, v, delete ? "DELETE" : "UPSERT", delete ? null : name, "users-stream");
            boolean sent = bridge.send("users-out-0", MessageBuilder.withPayload(e).setHeader(KafkaHeaders.KEY, key).build());
            if (!sent) {
                throw new IllegalStateException("the binder did not take " + key + "@" + v);
            }
            log.info("published {}@{} {}", key, v, e.op());
            return v;
        }

        User get(String id) {
            return rows.get(id);
        }
    }

    @RestController
    public static class Api {
        private final Users users;

        public Api(Users users) {
            this.users = users;
        }

        @PutMapping("/users/{id}")
        public Map<String, Object> put(@PathVariable String id, @RequestBody String name) {
            return Map.of("key", "user:" + id, "version", users.put(id, name, false));
        }

        @DeleteMapping("/users/{id}")
        public Map<String, Object> delete(@PathVariable String id) {
            return Map.of("key", "user:" + id, "version", users.put(id, null, true));
        }

        @GetMapping("/cache/{key}")
        public ResponseEntity<String> origin(@PathVariable String key) {
            if (!key.startsWith("user:")) {
                return ResponseEntity.notFound().build();
            }
            User u = users.get(key.substring("user:".length()));
            if (u == null) {
                return ResponseEntity.notFound().build();
            }
            ResponseEntity.BodyBuilder b = ResponseEntity.status(u.deleted() ? 404 : 200).header("Cachewire-Version", Long.toString(u.version()));
            return u.deleted() ? b.build() : b.body(u.name());
        }

        @GetMapping("/healthz")
        public String health() {
            return "ok";
        }
    }
}
