{{/*
Names, labels, images and small shared pieces.
*/}}

{{- define "natter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped base name; component objects append "-<component>". Kept short
enough for the suffixes ("-signaling-metrics" is 18 characters). */}}
{{- define "natter.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "natter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels. Takes (dict "root" $ "component" NAME). */}}
{{- define "natter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "natter.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/* All labels. Takes (dict "root" $ "component" NAME). */}}
{{- define "natter.labels" -}}
helm.sh/chart: {{ include "natter.chart" .root }}
{{ include "natter.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: natter
{{- end -}}

{{- define "natter.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "natter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "natter.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* "host:port", bracketing IPv6 hosts. Takes (list HOST PORT). */}}
{{- define "natter.hostPort" -}}
{{- $host := index . 0 -}}
{{- if and (contains ":" $host) (not (hasPrefix "[" $host)) -}}
{{- printf "[%s]:%d" $host (int (index . 1)) -}}
{{- else -}}
{{- printf "%s:%d" $host (int (index . 1)) -}}
{{- end -}}
{{- end -}}

{{/* Secret names: the configured one, else <fullname>-<suffix>. */}}
{{- define "natter.secret.tokens" -}}
{{- default (printf "%s-tokens" (include "natter.fullname" .)) .Values.tokens.existingSecret -}}
{{- end -}}
{{- define "natter.secret.database" -}}
{{- default (printf "%s-database" (include "natter.fullname" .)) .Values.postgresql.existingSecret -}}
{{- end -}}
{{- define "natter.secret.redis" -}}
{{- default (printf "%s-redis" (include "natter.fullname" .)) .Values.redis.existingSecret -}}
{{- end -}}
{{- define "natter.secret.s3" -}}
{{- default (printf "%s-s3" (include "natter.fullname" .)) .Values.s3.credentials.existingSecret -}}
{{- end -}}
{{- define "natter.secret.media" -}}
{{- default (printf "%s-media" (include "natter.fullname" .)) .Values.mediaUrlSigning.existingSecret -}}
{{- end -}}
{{- define "natter.secret.turn" -}}
{{- default (printf "%s-turn" (include "natter.fullname" .)) .Values.turn.auth.existingSecret -}}
{{- end -}}
{{- define "natter.secret.sms" -}}
{{- default (printf "%s-sms" (include "natter.fullname" .)) .Values.sms.webhook.existingSecret -}}
{{- end -}}
{{- define "natter.secret.tests" -}}
{{- default (printf "%s-tests" (include "natter.fullname" .)) .Values.tests.existingSecret -}}
{{- end -}}
{{- define "natter.secret.push" -}}
{{- default (printf "%s-push" (include "natter.fullname" .)) .Values.push.webhook.existingSecret -}}
{{- end -}}
{{- define "natter.secret.twilio" -}}
{{- default (printf "%s-twilio" (include "natter.fullname" .)) .Values.sms.twilio.existingSecret -}}
{{- end -}}
{{- define "natter.secret.fcm" -}}
{{- default (printf "%s-fcm" (include "natter.fullname" .)) .Values.push.fcm.existingSecret -}}
{{- end -}}
{{- define "natter.secret.apns" -}}
{{- default (printf "%s-apns" (include "natter.fullname" .)) .Values.push.apns.existingSecret -}}
{{- end -}}

{{/* Push providers in use: (dict "fcm" BOOL "apns" BOOL "ca" BOOL), all false
unless push.backend is providers. Their credentials are files mounted from
Secrets under /etc/natter/push/ in the pods that run chat. */}}
{{- define "natter.pushProviders" -}}
{{- $p := .Values.push -}}
{{- $on := eq $p.backend "providers" -}}
{{- $fcm := and $on $p.fcm.enabled -}}
{{- $apns := and $on $p.apns.enabled -}}
{{- toJson (dict "fcm" $fcm "apns" $apns "ca" (and (or $fcm $apns) (ne $p.caBundle.secretName ""))) -}}
{{- end -}}

{{/* NATTER_HTTP__PUBLIC_URL: explicit, else derived from the first ingress host. */}}
{{- define "natter.publicUrl" -}}
{{- if .Values.publicUrl -}}
{{- .Values.publicUrl -}}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts -}}
{{- printf "%s://%s" (ternary "https" "http" (gt (len .Values.ingress.tls) 0)) (first .Values.ingress.hosts) -}}
{{- end -}}
{{- end -}}

{{/* The HTTP services that exist in this install: (list) of component names. */}}
{{- define "natter.httpComponents" -}}
{{- $out := list -}}
{{- if eq .Values.mode "embedded" -}}
{{- $out = list "embedded" -}}
{{- else -}}
{{- range $c := list "auth" "chat" "media" "signaling" -}}
{{- if (index $.Values $c).enabled -}}
{{- $out = append $out $c -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* Whether TURN pods of their own exist (distributed mode). */}}
{{- define "natter.turnPods" -}}
{{- if and (eq .Values.mode "distributed") .Values.turn.enabled -}}true{{- end -}}
{{- end -}}

{{/* The component label TURN ports live on: turn pods, or the embedded pod. */}}
{{- define "natter.turnComponent" -}}
{{- ternary "embedded" "turn" (eq .Values.mode "embedded") -}}
{{- end -}}

{{/* Pod-level settings shared by every natter pod. Takes (dict "root" $ "c" COMPONENT_VALUES "component" NAME). */}}
{{- define "natter.podCommon" -}}
{{- $root := .root -}}
serviceAccountName: {{ include "natter.serviceAccountName" $root }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with .c.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.extraInitContainers }}
initContainers:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Soft spread over nodes unless the component sets its own constraints. */}}
{{- define "natter.topologySpread" -}}
{{- if .c.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml .c.topologySpreadConstraints | nindent 2 }}
{{- else }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "natter.selectorLabels" (dict "root" .root "component" .component) | nindent 8 }}
{{- end }}
{{- end -}}

{{/* Probes against the HTTP port: startup and liveness on /healthz, readiness on /readyz. */}}
{{- define "natter.probes" -}}
{{- $p := .root.Values.probes -}}
startupProbe:
  httpGet:
    path: /healthz
    port: {{ .port }}
  periodSeconds: {{ $p.startup.periodSeconds }}
  timeoutSeconds: {{ $p.startup.timeoutSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ .port }}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ .port }}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
{{- end -}}

{{/* preStop sleep (no shell in the image). Takes the seconds. */}}
{{- define "natter.preStop" -}}
{{- if gt (int .) 0 }}
lifecycle:
  preStop:
    sleep:
      seconds: {{ int . }}
{{- end }}
{{- end -}}

{{/* Pod annotations: config checksum plus the component's own. */}}
{{- define "natter.podAnnotations" -}}
{{- $ann := dict -}}
{{- if .root.Values.configToml -}}
{{- $_ := set $ann "checksum/config" (include "natter.configToml" .root | sha256sum) -}}
{{- end -}}
{{- $ann = merge $ann (.c.podAnnotations | default dict) -}}
{{- if $ann }}
annotations:
  {{- toYaml $ann | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "natter.configToml" -}}
{{- .Values.configToml -}}
{{- end -}}

{{/* Volumes every natter pod has: the data dir (unless given), /tmp, the config
file; and the push providers' credentials in pods that run chat. Takes
(dict "root" $ "component" NAME). */}}
{{- define "natter.volumeMounts" -}}
- name: data
  mountPath: {{ .root.Values.dataDir.mountPath }}
- name: tmp
  mountPath: /tmp
{{- if .root.Values.configToml }}
- name: config
  mountPath: /etc/natter
  readOnly: true
{{- end }}
{{- if has .component (list "chat" "embedded") }}
{{- $push := include "natter.pushProviders" .root | fromJson }}
{{- if $push.fcm }}
- name: push-fcm
  mountPath: /etc/natter/push/fcm
  readOnly: true
{{- end }}
{{- if $push.apns }}
- name: push-apns
  mountPath: /etc/natter/push/apns
  readOnly: true
{{- end }}
{{- if $push.ca }}
- name: push-ca
  mountPath: /etc/natter/push/ca
  readOnly: true
{{- end }}
{{- end }}
{{- with .root.Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "natter.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .root.Values.tmpSizeLimit }}
{{- if .root.Values.configToml }}
- name: config
  configMap:
    name: {{ include "natter.fullname" .root }}-config
{{- end }}
{{- if has .component (list "chat" "embedded") }}
{{- $p := .root.Values.push }}
{{- $push := include "natter.pushProviders" .root | fromJson }}
{{- /* Readable by natter only: 0440 with the pod's fsGroup as the files' group,
       0444 when the pod sets none (the files are root's then). */}}
{{- $mode := ternary "0440" "0444" (hasKey .root.Values.podSecurityContext "fsGroup") }}
{{- if $push.fcm }}
- name: push-fcm
  secret:
    secretName: {{ include "natter.secret.fcm" .root }}
    defaultMode: {{ $mode }}
    items:
      - key: {{ $p.fcm.serviceAccountKey }}
        path: {{ $p.fcm.serviceAccountKey }}
{{- end }}
{{- if $push.apns }}
- name: push-apns
  secret:
    secretName: {{ include "natter.secret.apns" .root }}
    defaultMode: {{ $mode }}
    items:
      - key: {{ $p.apns.keyKey }}
        path: {{ $p.apns.keyKey }}
{{- end }}
{{- if $push.ca }}
- name: push-ca
  secret:
    secretName: {{ $p.caBundle.secretName }}
    defaultMode: {{ $mode }}
    items:
      - key: {{ $p.caBundle.key }}
        path: {{ $p.caBundle.key }}
{{- end }}
{{- end }}
{{- with .root.Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* TURN container ports. Takes (dict "root" $ "hostNetwork" BOOL). */}}
{{- define "natter.turnContainerPorts" -}}
{{- $turn := .root.Values.turn -}}
- name: turn-udp
  containerPort: {{ $turn.port }}
  {{- if .hostNetwork }}
  hostPort: {{ $turn.port }}
  {{- end }}
  protocol: UDP
- name: turn-tcp
  containerPort: {{ $turn.port }}
  {{- if .hostNetwork }}
  hostPort: {{ $turn.port }}
  {{- end }}
  protocol: TCP
{{- if $turn.tls.enabled }}
- name: turns
  containerPort: {{ $turn.tls.port }}
  {{- if .hostNetwork }}
  hostPort: {{ $turn.tls.port }}
  {{- end }}
  protocol: TCP
{{- end }}
{{- end -}}

{{/* NetworkPolicy ingress rule for STUN/TURN and relayed media. */}}
{{- define "natter.turnIngressRule" -}}
{{- $turn := .Values.turn -}}
# STUN/TURN and relayed media, from anywhere.
- ports:
    - port: {{ $turn.port }}
      protocol: UDP
    - port: {{ $turn.port }}
      protocol: TCP
    {{- if $turn.tls.enabled }}
    - port: {{ $turn.tls.port }}
      protocol: TCP
    {{- end }}
    - port: {{ $turn.relayPorts.min }}
      endPort: {{ $turn.relayPorts.max }}
      protocol: UDP
{{- end -}}

{{/* NOTES lines for the providers' Secrets (Twilio, FCM, APNs, their CA) this
release reads, each with the command that creates it. */}}
{{- define "natter.providerSecretNotes" -}}
{{- $v := .Values -}}
{{- $ns := .Release.Namespace -}}
{{- $embedded := eq $v.mode "embedded" -}}
{{- if and (eq $v.sms.backend "twilio") (or $embedded $v.auth.enabled) }}
  {{ include "natter.secret.twilio" . }}  key {{ $v.sms.twilio.authTokenKey }}: the Twilio account's auth token
    kubectl -n {{ $ns }} create secret generic {{ include "natter.secret.twilio" . }} --from-literal={{ $v.sms.twilio.authTokenKey }}=AUTH-TOKEN
{{- end }}
{{- if or $embedded $v.chat.enabled }}
{{- $push := include "natter.pushProviders" . | fromJson }}
{{- if $push.fcm }}
  {{ include "natter.secret.fcm" . }}  key {{ $v.push.fcm.serviceAccountKey }}: the Firebase service-account JSON
    kubectl -n {{ $ns }} create secret generic {{ include "natter.secret.fcm" . }} --from-file={{ $v.push.fcm.serviceAccountKey }}=./service-account.json
{{- end }}
{{- if $push.apns }}
  {{ include "natter.secret.apns" . }}  key {{ $v.push.apns.keyKey }}: the APNs .p8 signing key ({{ $v.push.apns.keyId }})
    kubectl -n {{ $ns }} create secret generic {{ include "natter.secret.apns" . }} --from-file={{ $v.push.apns.keyKey }}=./AuthKey_{{ $v.push.apns.keyId }}.p8
{{- end }}
{{- if $push.ca }}
  {{ $v.push.caBundle.secretName }}  key {{ $v.push.caBundle.key }}: extra root certificates (PEM) for FCM and APNs
    kubectl -n {{ $ns }} create secret generic {{ $v.push.caBundle.secretName }} --from-file={{ $v.push.caBundle.key }}=./ca.pem
{{- end }}
{{- end }}
{{- end -}}
