{{/* The chart name, shortened to Kubernetes' 63-character label limit. */}}
{{- define "agora.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the prefix of every object it creates. */}}
{{- define "agora.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "agora.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agora.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "agora.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "agora.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: hub
app.kubernetes.io/part-of: agora
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "agora.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "agora.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the default tenant's API key: the operator's, or the one this chart generates. */}}
{{- define "agora.apiKeySecretName" -}}
{{- default (printf "%s-api-key" (include "agora.fullname" .)) .Values.apiKey.existingSecret }}
{{- end }}

{{- define "agora.image" -}}
{{- $repo := printf "%s/%s" .Values.image.registry .Values.image.repository }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* http or https: what the probes and the ServiceMonitor speak to the hub. */}}
{{- define "agora.scheme" -}}
{{- if .Values.tls.secretName }}https{{ else }}http{{ end }}
{{- end }}

{{/* Checks between values that values.schema.json cannot express, each naming the value to fix. */}}
{{- define "agora.validate" -}}
{{- $_ := required "database.existingSecret is required: the Secret holding the hub's PostgreSQL URL, e.g. kubectl create secret generic agora-database --from-literal=url='postgres://agora:PASSWORD@db:5432/agora', then --set database.existingSecret=agora-database" .Values.database.existingSecret }}
{{- if ge (int .Values.server.heartbeatIntervalSeconds) (int .Values.server.nodeTimeoutSeconds) }}
{{- fail (printf "server.heartbeatIntervalSeconds (%v) must be shorter than server.nodeTimeoutSeconds (%v): keep the timeout several heartbeats long" .Values.server.heartbeatIntervalSeconds .Values.server.nodeTimeoutSeconds) }}
{{- end }}
{{- if ge (int .Values.server.leaseRenewSeconds) (int .Values.server.leaseTtlSeconds) }}
{{- fail (printf "server.leaseRenewSeconds (%v) must be shorter than server.leaseTtlSeconds (%v)" .Values.server.leaseRenewSeconds .Values.server.leaseTtlSeconds) }}
{{- end }}
{{- if eq .Values.chain.mode "cosmos" }}
{{- if not .Values.chain.rpcUrl }}
{{- fail "chain.mode=cosmos needs chain.rpcUrl: the chain's CometBFT RPC endpoint, e.g. https://rpc.example.org:443" }}
{{- end }}
{{- if not .Values.chain.contract }}
{{- fail "chain.mode=cosmos needs chain.contract: the settlement contract's address" }}
{{- end }}
{{- if not .Values.chain.keySecret.name }}
{{- fail "chain.mode=cosmos needs chain.keySecret.name: the Secret holding the hub's chain signing key" }}
{{- end }}
{{- if not .Values.chain.chainId }}
{{- fail "chain.mode=cosmos needs chain.chainId: the chain id transactions are signed for, e.g. agora-1" }}
{{- end }}
{{- end }}
{{- if and (eq .Values.chain.mode "embedded") (gt (int .Values.replicas) 1) }}
{{- fail (printf "chain.mode=embedded runs a simulated devnet inside one hub process, so every replica would settle on a chain of its own: set replicas=1 (now %v), or chain.mode=cosmos" .Values.replicas) }}
{{- end }}
{{- if and .Values.rbac.create (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) }}
{{- fail "rbac.create binds the operator's permissions to the hub's service account: set serviceAccount.create=true or serviceAccount.name" }}
{{- end }}
{{- end }}
