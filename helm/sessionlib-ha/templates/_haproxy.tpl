{{/*
The optional master endpoint (haproxy.enabled): HAProxy with a role check in front of every
Redis pod. Its config is the shared template deploy/haproxy/haproxy.cfg (files/haproxy/),
filled in here as deploy/local/haproxy.py fills it for the local topology.
*/}}

{{- define "sessionlib-ha.haproxy.fullname" -}}
{{- printf "%s-haproxy" (include "sessionlib-ha.fullname" .) }}
{{- end }}

{{/*
haproxy.cfg for this release: every Redis pod by its stable name, looked up again through the
cluster DNS as pods come back with new IPs (init-addr none: a pod not yet there does not stop
HAProxy from starting). The check's password is no part of it: HAProxy reads it from the
REDIS_EXPORTER_PASSWORD variable at start (it expands variables in double-quoted strings).
*/}}
{{- define "sessionlib-ha.haproxy.config" -}}
{{- $servers := list }}
{{- range $index := until (int .Values.redis.replicas) }}
{{- $host := include "sessionlib-ha.redis.podHost" (dict "root" $ "index" $index) }}
{{- $servers = append $servers (printf "    server redis-%d %s:%d" $index $host (int $.Values.redis.port)) }}
{{- end }}
{{- $auth := "" }}
{{- if .Values.auth.enabled }}
{{- $auth = "    tcp-check send \"AUTH exporter ${REDIS_EXPORTER_PASSWORD}\\r\\n\"\n    tcp-check expect string +OK" }}
{{- end }}
{{- $config := .Files.Get "files/haproxy/haproxy.cfg" }}
{{- $config = $config | replace "${BIND}" (printf ":%d" (int .Values.haproxy.port)) }}
{{- $config = $config | replace "${CHECK_INTERVAL_MS}" (toString (int .Values.haproxy.checkIntervalMilliseconds)) }}
{{- $config = $config | replace "${SERVER_OPTIONS}" "resolvers dns init-addr last,libc,none" }}
{{- $config = $config | replace "${SERVERS}" (join "\n" $servers) }}
{{- $config = $config | replace "${CHECK_AUTH}" $auth }}
{{- if contains "${" ($config | replace "${REDIS_EXPORTER_PASSWORD}" "") }}
{{- fail "files/haproxy/haproxy.cfg has a placeholder templates/_haproxy.tpl does not fill: fill it there and in deploy/local/haproxy.py" }}
{{- end }}
{{- $config }}
{{- end }}

{{/*
What the chart cannot do with the endpoint, refused by name. TLS: HAProxy would have to open
TLS for its checks with a client certificate and verify each pod's name; that is tested only
on the local topology (make up-local SECURE=1 HAPROXY=1), not here.
*/}}
{{- define "sessionlib-ha.haproxy.validate" -}}
{{- if and .Values.haproxy.enabled .Values.tls.enabled }}
{{- fail "haproxy.enabled does not work with tls.enabled yet: use Sentinel-aware clients (as sessionlib does) with TLS, or turn one of the two off" }}
{{- end }}
{{- end }}
