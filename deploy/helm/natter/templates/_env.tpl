{{/*
Environment of a natter container: NATTER_<SECTION>__<KEY> variables, each
pod getting only the settings and secrets its service uses.

Takes (dict "root" $ "component" NAME) where NAME is one of
auth, chat, media, signaling, turn (distributed), embedded, migrate.

Keys marked "pending" are not read by the binary yet: an unknown section is
ignored at start-up, so they are harmless until the service that reads them
lands (docs/deploy.md lists them).
*/}}
{{- define "natter.env" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $c := .component -}}
{{- $embedded := eq $c "embedded" -}}
{{- $distributed := eq $v.mode "distributed" -}}
- name: NATTER_DATA_DIR
  value: {{ $v.dataDir.mountPath | quote }}
- name: NATTER_LOG__FORMAT
  value: {{ $v.log.format | quote }}
- name: NATTER_LOG__FILTER
  value: {{ $v.log.filter | quote }}
{{- if and $v.configToml (ne $c "migrate") }}
- name: NATTER_CONFIG
  value: /etc/natter/natter.toml
{{- end }}
{{- /* ---- HTTP ---- */}}
{{- if ne $c "migrate" }}
{{- if eq $c "turn" }}
{{- if and (eq $v.turn.mode "hostNetwork") $v.turn.hostNetwork.bindHttpToPodIP }}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: NATTER_HTTP__LISTEN
  value: {{ printf "$(POD_IP):%d" (int $v.turn.httpPort) | quote }}
{{- else }}
- name: NATTER_HTTP__LISTEN
  value: {{ include "natter.hostPort" (list $v.http.listenHost $v.turn.httpPort) | quote }}
{{- end }}
{{- else }}
- name: NATTER_HTTP__LISTEN
  value: {{ include "natter.hostPort" (list $v.http.listenHost $v.http.port) | quote }}
{{- end }}
{{- with include "natter.publicUrl" $root }}
- name: NATTER_HTTP__PUBLIC_URL
  value: {{ . | quote }}
{{- end }}
- name: NATTER_HTTP__TRUST_FORWARDED_FOR
  value: {{ and $v.http.trustForwardedFor (ne $c "turn") | quote }}
{{- /* In-cluster Prometheus scrapes from another pod; the Ingress never routes /metrics. */}}
- name: NATTER_HTTP__METRICS_FROM_ANYWHERE
  value: {{ $v.metrics.fromAnywhere | quote }}
{{- end }}
{{- /* ---- database ---- */}}
{{- if $embedded }}
- name: NATTER_DATABASE__MIGRATE_ON_START
  value: "true"
- name: NATTER_DATABASE__SQLITE_SYNCHRONOUS
  value: {{ $v.embedded.sqliteSynchronous | quote }}
{{- else if has $c (list "auth" "chat" "media" "signaling" "migrate") }}
- name: NATTER_DATABASE__URL
  valueFrom:
    secretKeyRef:
      name: {{ include "natter.secret.database" $root }}
      key: {{ $v.postgresql.urlKey }}
- name: NATTER_DATABASE__MIGRATE_ON_START
  value: {{ ternary "false" "true" $v.migrations.enabled | quote }}
- name: NATTER_DATABASE__MAX_CONNECTIONS
  value: {{ int $v.postgresql.maxConnections | quote }}
- name: NATTER_DATABASE__ACQUIRE_TIMEOUT_MS
  value: {{ int64 $v.postgresql.acquireTimeoutMs | quote }}
{{- end }}
{{- /* ---- access tokens (every HTTP service verifies them) ---- */}}
{{- if has $c (list "auth" "chat" "media" "signaling" "embedded") }}
{{- $optional := and $embedded (not $v.tokens.existingSecret) }}
- name: NATTER_TOKENS__SIGNING_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "natter.secret.tokens" $root }}
      key: {{ $v.tokens.signingKeyKey }}
      {{- if $optional }}
      optional: true
      {{- end }}
- name: NATTER_TOKENS__PREVIOUS_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ include "natter.secret.tokens" $root }}
      key: {{ $v.tokens.previousKeysKey }}
      optional: true
- name: NATTER_TOKENS__ACCESS_TTL_SECS
  value: {{ int $v.tokens.accessTtlSecs | quote }}
{{- end }}
{{- /* ---- auth: SMS ---- */}}
{{- if has $c (list "auth" "embedded") }}
- name: NATTER_AUTH__SMS__BACKEND
  value: {{ $v.sms.backend | quote }}
{{- if eq $v.sms.backend "webhook" }}
- name: NATTER_AUTH__SMS__WEBHOOK_URL
  value: {{ $v.sms.webhook.url | quote }}
- name: NATTER_AUTH__SMS__WEBHOOK_AUTHORIZATION
  valueFrom:
    secretKeyRef:
      name: {{ include "natter.secret.sms" $root }}
      key: {{ $v.sms.webhook.authorizationKey }}
      optional: true
{{- else if eq $v.sms.backend "twilio" }}
{{- $tw := $v.sms.twilio }}
- name: NATTER_AUTH__SMS__TWILIO__ACCOUNT_SID
  value: {{ $tw.accountSid | quote }}
- name: NATTER_AUTH__SMS__TWILIO__AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "natter.secret.twilio" $root }}
      key: {{ $tw.authTokenKey }}
- name: NATTER_AUTH__SMS__TWILIO__FROM
  value: {{ $tw.from | quote }}
{{- with $tw.messagingServiceSid }}
- name: NATTER_AUTH__SMS__TWILIO__MESSAGING_SERVICE_SID
  value: {{ . | quote }}
{{- end }}
{{- with $tw.voiceLanguage }}
- name: NATTER_AUTH__SMS__TWILIO__VOICE_LANGUAGE
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- /* ---- auth: test numbers for `helm test` ---- */}}
{{- if and $v.tests.enabled (has $c (list "auth" "embedded")) }}
- name: NATTER_AUTH__TEST_NUMBERS
  value: {{ join "," $v.tests.numbers | quote }}
- name: NATTER_AUTH__TEST_CODE
  valueFrom:
    secretKeyRef:
      name: {{ include "natter.secret.tests" $root }}
      key: {{ $v.tests.codeKey }}
{{- end }}
{{- /* ---- chat: Redis, push ---- */}}
{{- if and $distributed (has $c (list "chat" "signaling")) }}
- name: NATTER_REDIS__URL
  valueFrom:
    secretKeyRef:
      name: {{ include "natter.secret.redis" $root }}
      key: {{ $v.redis.urlKey }}
{{- end }}
{{- if has $c (list "chat" "embedded") }}
{{- $p := $v.push }}
- name: NATTER_CHAT__PUSH__BACKEND
  value: {{ $p.backend | quote }}
{{- if eq $p.backend "webhook" }}
- name: NATTER_CHAT__PUSH__WEBHOOK_URL
  value: {{ $p.webhook.url | quote }}
- name: NATTER_CHAT__PUSH__WEBHOOK_AUTHORIZATION
  valueFrom:
    secretKeyRef:
      name: {{ include "natter.secret.push" $root }}
      key: {{ $p.webhook.authorizationKey }}
      optional: true
{{- end }}
{{- /* providers: credentials are files from Secrets mounted by natter.volumeMounts. */}}
{{- $push := include "natter.pushProviders" $root | fromJson }}
{{- if $push.fcm }}
- name: NATTER_CHAT__PUSH__FCM__SERVICE_ACCOUNT_FILE
  value: {{ printf "/etc/natter/push/fcm/%s" $p.fcm.serviceAccountKey | quote }}
{{- with $p.fcm.endpoint }}
- name: NATTER_CHAT__PUSH__FCM__ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: NATTER_CHAT__PUSH__FCM__MESSAGE_TTL_SECS
  value: {{ int $p.fcm.messageTtlSecs | quote }}
- name: NATTER_CHAT__PUSH__FCM__CALL_TTL_SECS
  value: {{ int $p.fcm.callTtlSecs | quote }}
{{- if $push.ca }}
- name: NATTER_CHAT__PUSH__FCM__HTTP__CA_FILE
  value: {{ printf "/etc/natter/push/ca/%s" $p.caBundle.key | quote }}
{{- end }}
{{- end }}
{{- if $push.apns }}
- name: NATTER_CHAT__PUSH__APNS__KEY_FILE
  value: {{ printf "/etc/natter/push/apns/%s" $p.apns.keyKey | quote }}
- name: NATTER_CHAT__PUSH__APNS__KEY_ID
  value: {{ $p.apns.keyId | quote }}
- name: NATTER_CHAT__PUSH__APNS__TEAM_ID
  value: {{ $p.apns.teamId | quote }}
- name: NATTER_CHAT__PUSH__APNS__BUNDLE_ID
  value: {{ $p.apns.bundleId | quote }}
- name: NATTER_CHAT__PUSH__APNS__ENVIRONMENT
  value: {{ $p.apns.environment | quote }}
- name: NATTER_CHAT__PUSH__APNS__MESSAGE_PUSH_TYPE
  value: {{ $p.apns.messagePushType | quote }}
{{- if $push.ca }}
- name: NATTER_CHAT__PUSH__APNS__HTTP__CA_FILE
  value: {{ printf "/etc/natter/push/ca/%s" $p.caBundle.key | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- /* ---- media: URL signing key, S3 (pending); the filesystem backend is <data dir>/media ---- */}}
{{- if has $c (list "media" "embedded") }}
{{- $optional := and $embedded (not $v.mediaUrlSigning.existingSecret) }}
- name: NATTER_MEDIA__SIGNING_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "natter.secret.media" $root }}
      key: {{ $v.mediaUrlSigning.signingKeyKey }}
      {{- if $optional }}
      optional: true
      {{- end }}
- name: NATTER_MEDIA__PREVIOUS_SIGNING_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ include "natter.secret.media" $root }}
      key: {{ $v.mediaUrlSigning.previousKeysKey }}
      optional: true
{{- end }}
{{- if and $distributed (eq $c "media") (eq $v.mediaStorage.backend "s3") }}
- name: NATTER_MEDIA__BACKEND
  value: "s3"
{{- with $v.s3.endpoint }}
- name: NATTER_MEDIA__S3__ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: NATTER_MEDIA__S3__REGION
  value: {{ $v.s3.region | quote }}
- name: NATTER_MEDIA__S3__BUCKET
  value: {{ $v.s3.bucket | quote }}
{{- with $v.s3.prefix }}
- name: NATTER_MEDIA__S3__PREFIX
  value: {{ . | quote }}
{{- end }}
- name: NATTER_MEDIA__S3__PATH_STYLE
  value: {{ $v.s3.pathStyle | quote }}
{{- if $v.s3.credentials.fromSecret }}
- name: NATTER_MEDIA__S3__ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "natter.secret.s3" $root }}
      key: {{ $v.s3.credentials.accessKeyIdKey }}
- name: NATTER_MEDIA__S3__SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "natter.secret.s3" $root }}
      key: {{ $v.s3.credentials.secretAccessKeyKey }}
{{- end }}
{{- end }}
{{- /* ---- TURN: the server (turn pods, embedded) and credential hand-out (signaling) ---- */}}
{{- $turnHere := and $v.turn.enabled (has $c (list "turn" "embedded" "signaling")) }}
{{- if $turnHere }}
{{- $optional := and $embedded (not $v.turn.auth.existingSecret) }}
- name: NATTER_TURN__AUTH_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "natter.secret.turn" $root }}
      key: {{ $v.turn.auth.secretKey }}
      {{- if $optional }}
      optional: true
      {{- end }}
- name: NATTER_TURN__REALM
  value: {{ $v.turn.realm | quote }}
{{- end }}
{{- if and $turnHere (has $c (list "turn" "embedded")) }}
- name: NATTER_TURN__LISTEN
  value: {{ include "natter.hostPort" (list $v.turn.listenHost $v.turn.port) | quote }}
- name: NATTER_TURN__PORT_RANGE
  value: {{ printf "%d-%d" (int $v.turn.relayPorts.min) (int $v.turn.relayPorts.max) | quote }}
{{- /* TURN drains on SIGTERM within the pod's grace period: the turn pods' is
       derived from drainGraceSeconds; the embedded pod's is shared with the
       HTTP drain, which runs at the same time. */}}
- name: NATTER_TURN__DRAIN_GRACE_SECS
  {{- if eq $c "turn" }}
  value: {{ int $v.turn.drainGraceSeconds | quote }}
  {{- else }}
  value: {{ max 0 (sub (sub (int $v.embedded.terminationGracePeriodSeconds) (int $v.embedded.preStopSleepSeconds)) 10) | quote }}
  {{- end }}
{{- with $v.turn.externalIP }}
- name: NATTER_TURN__EXTERNAL_IP
  value: {{ . | quote }}
{{- end }}
{{- $disc := $v.turn.externalIPDiscovery }}
{{- if eq $disc.mode "stun" }}
- name: NATTER_TURN__EXTERNAL_IP_STUN_SERVER
  value: {{ $disc.stunServer | quote }}
- name: NATTER_TURN__EXTERNAL_IP_STUN_REQUIRED
  value: {{ $disc.required | quote }}
- name: NATTER_TURN__EXTERNAL_IP_STUN_TIMEOUT_SECS
  value: {{ int $disc.timeoutSeconds | quote }}
{{- else if eq $disc.mode "hostIP" }}
{{- /* The node's address from the downward API: only the public IP when the
       kubelet registered that one (docs/turn.md). */}}
- name: NATTER_TURN__EXTERNAL_IP
  valueFrom:
    fieldRef:
      fieldPath: status.hostIP
{{- end }}
{{- if $v.turn.relayIP }}
- name: NATTER_TURN__RELAY_IP
  value: {{ $v.turn.relayIP | quote }}
{{- else if eq $v.turn.mode "loadBalancer" }}
{{- /* Behind a load balancer the relay binds to the pod's own address (the
       load balancer forwards relay ports to it); the route-lookup default
       would usually find it too, this makes it explicit. */}}
- name: TURN_POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: NATTER_TURN__RELAY_IP
  value: "$(TURN_POD_IP)"
{{- end }}
{{- with $v.turn.relayIPv6 }}
- name: NATTER_TURN__RELAY_IPV6
  value: {{ . | quote }}
{{- end }}
{{- with $v.turn.externalIPv6 }}
- name: NATTER_TURN__EXTERNAL_IPV6
  value: {{ . | quote }}
{{- end }}
{{- with $v.turn.allowedPeers }}
- name: NATTER_TURN__ALLOWED_PEERS
  value: {{ join "," . | quote }}
{{- end }}
{{- if $v.turn.tls.enabled }}
- name: NATTER_TURN__TLS_LISTEN
  value: {{ include "natter.hostPort" (list $v.turn.listenHost $v.turn.tls.port) | quote }}
- name: NATTER_TURN__TLS_CERT_PATH
  value: /etc/natter/turn-tls/tls.crt
- name: NATTER_TURN__TLS_KEY_PATH
  value: /etc/natter/turn-tls/tls.key
{{- end }}
{{- end }}
{{- if and $turnHere (has $c (list "signaling" "embedded")) $v.turn.publicUrls }}
- name: NATTER_SIGNALING__TURN_URLS
  value: {{ join "," $v.turn.publicUrls | quote }}
{{- end }}
{{- /* ---- operator's own ---- */}}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- if ne $c "migrate" }}
{{- with (index $v $c).extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- end -}}
