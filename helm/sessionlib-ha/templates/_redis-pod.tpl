{{/*
What the Redis pod's scripts (files/scripts/*.sh) are given: the environment listed at the top
of files/scripts/lib.sh. tests/helm runs the scripts with exactly this environment (addresses
swapped for 127.0.0.1), so a variable missing here fails there.
*/}}
{{- define "sessionlib-ha.redis.scriptEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
# The pod's stable DNS name under the headless Service: what Redis and Sentinel announce.
- name: ANNOUNCE_HOST
  value: {{ printf "$(POD_NAME).%s" (include "sessionlib-ha.redis.domain" .) | quote }}
- name: REDIS_PORT
  value: {{ .Values.redis.port | quote }}
{{- if include "sessionlib-ha.redis.isCluster" . }}
# Every cluster node, in pod order: who creates the cluster, which shard a pod is in, and
# whom a node meets again by name after pods came back on new IPs.
- name: REDIS_NODES
  value: {{ include "sessionlib-ha.redis.addresses" . | fromJsonArray | join " " | quote }}
- name: CLUSTER_BUS_PORT
  value: {{ .Values.redis.cluster.busPort | quote }}
- name: CLUSTER_REPLICAS
  value: {{ .Values.redis.cluster.replicasPerShard | quote }}
- name: CLUSTER_NODE_TIMEOUT_MS
  value: {{ .Values.redis.cluster.nodeTimeoutMilliseconds | quote }}
- name: MIN_REPLICAS_TO_WRITE
  value: {{ .Values.redis.minReplicasToWrite | quote }}
- name: MIN_REPLICAS_MAX_LAG
  value: {{ .Values.redis.minReplicasMaxLag | quote }}
- name: PRESTOP_TIMEOUT_SECONDS
  value: {{ .Values.redis.preStopTimeoutSeconds | quote }}
{{- else }}
- name: SENTINEL_PORT
  value: {{ .Values.sentinel.port | quote }}
- name: SENTINELS
  value: {{ include "sessionlib-ha.sentinel.addresses" . | fromJsonArray | join " " | quote }}
# Every Redis node, in pod order: where the scripts look for a running master, and who
# elects one from their data when no sentinel answers (a cold start, a first install).
- name: REDIS_NODES
  value: {{ include "sessionlib-ha.redis.addresses" . | fromJsonArray | join " " | quote }}
- name: MASTER_NAME
  value: {{ .Values.sentinel.masterName | quote }}
- name: QUORUM
  value: {{ include "sessionlib-ha.sentinel.quorum" . | quote }}
- name: DOWN_AFTER_MS
  value: {{ .Values.sentinel.downAfterMilliseconds | quote }}
- name: FAILOVER_TIMEOUT_MS
  value: {{ .Values.sentinel.failoverTimeoutMilliseconds | quote }}
- name: MIN_REPLICAS_TO_WRITE
  value: {{ .Values.redis.minReplicasToWrite | quote }}
- name: MIN_REPLICAS_MAX_LAG
  value: {{ .Values.redis.minReplicasMaxLag | quote }}
- name: PRESTOP_TIMEOUT_SECONDS
  value: {{ .Values.redis.preStopTimeoutSeconds | quote }}
- name: COLD_START_WAIT_SECONDS
  value: {{ .Values.redis.coldStartWaitSeconds | quote }}
- name: STALE_SENTINEL_SECONDS
  value: {{ .Values.sentinel.staleSentinelSeconds | quote }}
- name: RESET_STAGGER_SECONDS
  value: {{ .Values.sentinel.resetStaggerSeconds | quote }}
- name: RESOLVE_WAIT_SECONDS
  value: {{ .Values.sentinel.resolveWaitSeconds | quote }}
{{- end }}
- name: TEMPLATE_DIR
  value: /opt/sessionlib/templates
{{- if .Values.auth.enabled }}
{{- /* Every user's password: the scripts render the ACL files with their hashes, Redis logs
       in to its master as replica, Sentinel to the nodes and its peers as sentinel, and the
       scripts themselves (probes, preStop) run as admin. */}}
{{- range $user := include "sessionlib-ha.auth.users" . | fromJsonArray }}
{{ include "sessionlib-ha.auth.passwordEnv" (dict "root" $ "user" $user "name" (printf "%s_PASSWORD" (upper $user))) }}
{{- end }}
{{- end }}
{{- if .Values.tls.enabled }}
- name: TLS_ENABLED
  value: "true"
- name: TLS_CERT_FILE
  value: {{ printf "%s/tls.crt" (include "sessionlib-ha.tls.dir" .) }}
- name: TLS_KEY_FILE
  value: {{ printf "%s/tls.key" (include "sessionlib-ha.tls.dir" .) }}
- name: TLS_CA_FILE
  value: {{ printf "%s/ca.crt" (include "sessionlib-ha.tls.dir" .) }}
- name: TLS_AUTH_CLIENTS
  value: {{ .Values.tls.authClients | quote }}
{{- end }}
{{- end }}

{{/*
An exec probe running one mode of files/scripts/probe.sh: (dict "mode" "redis-ready"
"timings" .Values.redis.readinessProbe), or of another probe script given as "script".
*/}}
{{- define "sessionlib-ha.redis.execProbe" -}}
{{- $handler := dict "exec" (dict "command" (list "sh" (printf "/opt/sessionlib/scripts/%s" (.script | default "probe.sh")) .mode)) }}
{{- include "sessionlib-ha.probe" (dict "handler" $handler "timings" .timings) }}
{{- end }}

{{/*
One redis_exporter sidecar: (dict "root" $ "name" "redis-exporter" "target" "redis"
"port" 9121 "portName" "exp-redis" "targetPort" 6379). It logs in as the exporter user and
never sends CONFIG GET, which would hand it masterauth and which its ACL user may not run.
With TLS it connects by the pod's DNS name, which the certificate names, so it can verify it.
*/}}
{{- define "sessionlib-ha.redis.exporter" -}}
{{- $root := .root }}
- name: {{ .name }}
  image: {{ include "sessionlib-ha.image" (dict "root" $root "image" $root.Values.exporter.image) }}
  imagePullPolicy: {{ $root.Values.exporter.image.pullPolicy }}
  securityContext:
    {{- toYaml $root.Values.redis.containerSecurityContext | nindent 4 }}
  env:
    {{- if $root.Values.tls.enabled }}
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: REDIS_ADDR
      value: {{ printf "rediss://$(POD_NAME).%s:%d" (include "sessionlib-ha.redis.domain" $root) (int .targetPort) | quote }}
    - name: REDIS_EXPORTER_TLS_CA_CERT_FILE
      value: {{ printf "%s/ca.crt" (include "sessionlib-ha.tls.dir" $root) }}
    {{- if ne $root.Values.tls.authClients "no" }}
    - name: REDIS_EXPORTER_TLS_CLIENT_CERT_FILE
      value: {{ printf "%s/tls.crt" (include "sessionlib-ha.tls.dir" $root) }}
    - name: REDIS_EXPORTER_TLS_CLIENT_KEY_FILE
      value: {{ printf "%s/tls.key" (include "sessionlib-ha.tls.dir" $root) }}
    {{- end }}
    {{- else }}
    - name: REDIS_ADDR
      value: {{ printf "redis://localhost:%d" (int .targetPort) | quote }}
    {{- end }}
    {{- if $root.Values.auth.enabled }}
    - name: REDIS_USER
      value: exporter
    {{- include "sessionlib-ha.auth.passwordEnv" (dict "root" $root "user" "exporter" "name" "REDIS_PASSWORD") | nindent 4 }}
    - name: REDIS_EXPORTER_CONFIG_COMMAND
      value: "-"
    {{- end }}
    - name: REDIS_EXPORTER_WEB_LISTEN_ADDRESS
      value: {{ printf ":%d" (int .port) | quote }}
    {{- with $root.Values.exporter.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: {{ .portName }}
      containerPort: {{ .port }}
      protocol: TCP
  livenessProbe:
    httpGet:
      path: /health
      port: {{ .portName }}
    periodSeconds: 15
    timeoutSeconds: 5
  resources:
    {{- toYaml $root.Values.exporter.resources | nindent 4 }}
  {{- if $root.Values.tls.enabled }}
  volumeMounts:
    - name: tls
      mountPath: {{ include "sessionlib-ha.tls.dir" $root }}
      readOnly: true
  {{- end }}
{{- end }}
