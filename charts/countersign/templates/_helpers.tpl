{{/*
Labels of every object. `app.kubernetes.io/name: countersign` is the one countersign's own
objects carry (src/install); the others are Helm's.
*/}}
{{- define "countersign.labels" -}}
app.kubernetes.io/name: countersign
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* The labels that select countersign's pods. */}}
{{- define "countersign.selectorLabels" -}}
app.kubernetes.io/name: countersign
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
"true" when countersign runs in this cluster (Deployment, Service, PodDisruptionBudget):
deployment.enabled `auto` means unless webhook.url is set.
*/}}
{{- define "countersign.inCluster" -}}
{{- $enabled := .Values.deployment.enabled -}}
{{- if eq (toString $enabled) "auto" -}}
{{- if not .Values.webhook.url }}true{{ end -}}
{{- else if $enabled -}}
true
{{- end -}}
{{- end }}

{{/* "true" when cert-manager issues the serving certificate (only for a pod to serve it). */}}
{{- define "countersign.certManager" -}}
{{- if and (include "countersign.inCluster" .) .Values.certManager.enabled }}true{{ end -}}
{{- end }}

{{/*
"true" when countersign keeps its CA and serving certificate itself (`serve
--self-managed-tls`, Secret countersign-webhook-tls): neither cert-manager nor a Secret nor
a CA bundle was given.
*/}}
{{- define "countersign.selfManaged" -}}
{{- if not (or (include "countersign.certManager" .) .Values.tls.existingSecret .Values.tls.caBundle) }}true{{ end -}}
{{- end }}

{{/* The Secret holding tls.crt, tls.key and ca.crt (cert-manager's or the given one). */}}
{{- define "countersign.tlsSecret" -}}
{{- if include "countersign.certManager" . -}}
countersign-tls
{{- else -}}
{{- .Values.tls.existingSecret -}}
{{- end -}}
{{- end }}

{{/*
The CA bundle of the webhook configurations, base64: the given one; self-managed, the one
countersign keeps (looked up, so an upgrade keeps what countersign injected; empty on a
first install until countersign injects it); none when cert-manager injects it.
*/}}
{{- define "countersign.caBundle" -}}
{{- if include "countersign.certManager" . -}}
{{- else if .Values.tls.caBundle -}}
{{ .Values.tls.caBundle | b64enc }}
{{- else -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace "countersign-webhook-tls" -}}
{{- if and $secret $secret.data -}}
{{ index $secret.data "ca.crt" | default "" }}
{{- end -}}
{{- end -}}
{{- end }}

{{/*
"true" when countersign authenticates its caller by client certificate (`serve
--client-ca-file`): webhook.clientAuth names a CA bundle, inline or in a ConfigMap.
*/}}
{{- define "countersign.clientAuth" -}}
{{- $auth := .Values.webhook.clientAuth -}}
{{- if or $auth.caBundle $auth.existingConfigMap.name }}true{{ end -}}
{{- end }}

{{/* The ConfigMap with the client CA bundle: the chart's (from caBundle) or the given one. */}}
{{- define "countersign.clientCaConfigMap" -}}
{{- if .Values.webhook.clientAuth.caBundle -}}
countersign-client-ca
{{- else -}}
{{- .Values.webhook.clientAuth.existingConfigMap.name -}}
{{- end -}}
{{- end }}

{{/* Its key holding the bundle. */}}
{{- define "countersign.clientCaKey" -}}
{{- if .Values.webhook.clientAuth.caBundle -}}
ca.crt
{{- else -}}
{{- .Values.webhook.clientAuth.existingConfigMap.key -}}
{{- end -}}
{{- end }}

{{/* The certificate choices that cannot work, refused with what to do instead. */}}
{{- define "countersign.validate" -}}
{{- if not (or (include "countersign.inCluster" .) .Values.webhook.url) -}}
{{- fail "deployment.enabled=false needs webhook.url: without countersign in this cluster, the webhook configurations must point at where it runs" -}}
{{- end -}}
{{- if include "countersign.inCluster" . -}}
{{- if and .Values.certManager.enabled .Values.tls.existingSecret -}}
{{- fail "certManager.enabled and tls.existingSecret are two sources of the serving certificate: set certManager.enabled=false to use tls.existingSecret" -}}
{{- end -}}
{{- if and .Values.tls.existingSecret (not .Values.tls.caBundle) -}}
{{- fail "tls.existingSecret needs tls.caBundle, the PEM CA the API server trusts the webhook with (the Secret's ca.crt): --set-file tls.caBundle=ca.crt" -}}
{{- end -}}
{{- if and .Values.tls.caBundle (not .Values.tls.existingSecret) -}}
{{- fail "tls.caBundle without tls.existingSecret: countersign in this cluster would serve no certificate of that CA; give tls.existingSecret too, or leave tls.caBundle empty for self-managed certificates" -}}
{{- end -}}
{{- end -}}
{{- $auth := .Values.webhook.clientAuth -}}
{{- if and $auth.caBundle $auth.existingConfigMap.name -}}
{{- fail "webhook.clientAuth.caBundle and webhook.clientAuth.existingConfigMap.name are two sources of the client CA: give one" -}}
{{- end -}}
{{- if and $auth.names (not (include "countersign.clientAuth" .)) -}}
{{- fail "webhook.clientAuth.names needs the CA that signs the API server's client certificate: --set-file webhook.clientAuth.caBundle=webhook-client-ca.crt, or webhook.clientAuth.existingConfigMap.name" -}}
{{- end -}}
{{- if and (include "countersign.clientAuth" .) (not (include "countersign.inCluster" .)) -}}
{{- fail "webhook.clientAuth configures the countersign this chart runs, and with webhook.url it runs none here: pass --client-ca-file (and --client-name) to the countersign serve at webhook.url, or set deployment.enabled=true" -}}
{{- end -}}
{{- $policy := .Values.networkPolicy -}}
{{- if and $policy.enabled (include "countersign.inCluster" .) (not (or $policy.apiServer.cidrs $policy.apiServer.peers (include "countersign.clientAuth" .))) -}}
{{- fail "networkPolicy.enabled (the default) admits to countersign's port only the control plane, and no control plane addresses are given: set networkPolicy.apiServer.cidrs (or networkPolicy.apiServer.peers where the API server calls webhooks from pods, e.g. AKS's konnectivity-agent); docs/install.md, \"Managed clusters (EKS, GKE, AKS): the NetworkPolicy\", says how to find them. Or configure webhook.clientAuth, so that countersign authenticates the API server itself (docs/install.md, \"Authenticating the API server to countersign\"). Or, knowingly, set networkPolicy.enabled=false: countersign then answers reviews from anyone who reaches its pods" -}}
{{- end -}}
{{- end }}

{{/* The container image reference. */}}
{{- define "countersign.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}:{{ $tag }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end }}

{{/*
One webhook's clientConfig: the Service (or webhook.url) with the webhook's path, and the CA
bundle (see countersign.caBundle). Called with (dict "root" $ "path" "/validate/…").
*/}}
{{- define "countersign.clientConfig" -}}
{{- $root := .root -}}
clientConfig:
  {{- if $root.Values.webhook.url }}
  url: {{ printf "%s%s" (trimSuffix "/" $root.Values.webhook.url) .path | quote }}
  {{- else }}
  service:
    namespace: {{ $root.Release.Namespace }}
    name: countersign
    path: {{ .path }}
    port: 443
  {{- end }}
  {{- with (include "countersign.caBundle" $root) }}
  caBundle: {{ . }}
  {{- end }}
{{- end }}

{{/* The metadata of both webhook configurations. */}}
{{- define "countersign.webhookMetadata" -}}
metadata:
  name: countersign
  labels:
    {{- include "countersign.labels" . | nindent 4 }}
  annotations:
    # The countersign version these are for: replicas of an older version leave them to
    # it (neither restored nor injected) instead of undoing an upgrade.
    countersign.dev/version: {{ .Chart.AppVersion | quote }}
    {{- if include "countersign.certManager" . }}
    # cert-manager's CA injector puts the serving certificate's CA into every caBundle.
    cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/countersign
    {{- end }}
{{- end }}
