{{/* Names, labels, images, security contexts, the storage Secret's name, profiles and the checks
of value combinations that values.schema.json cannot express. */}}

{{- define "micropipe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<name>, or the release name alone when it already contains the chart name. */}}
{{- define "micropipe.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "micropipe.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "micropipe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "micropipe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "micropipe.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "micropipe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "micropipe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "micropipe.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, or repository@digest when a digest is set. Argument: an image values map and the
default tag, as (list $image $defaultTag). */}}
{{- define "micropipe.imageRef" -}}
{{- $image := index . 0 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default (index . 1) $image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "micropipe.image" -}}
{{- include "micropipe.imageRef" (list .Values.image .Chart.AppVersion) -}}
{{- end -}}

{{- define "micropipe.minioImage" -}}
{{- include "micropipe.imageRef" (list .Values.minio.image "") -}}
{{- end -}}

{{- define "micropipe.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets -}}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* Pod-level security context shared by every pod of the chart. */}}
{{- define "micropipe.podSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  {{- with .Values.securityContext.runAsUser }}
  runAsUser: {{ . }}
  {{- end }}
  {{- with .Values.securityContext.runAsGroup }}
  runAsGroup: {{ . }}
  {{- end }}
  {{- with .Values.securityContext.fsGroup }}
  fsGroup: {{ . }}
  {{- end }}
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* Container-level security context shared by every container of the chart. */}}
{{- define "micropipe.containerSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  {{- with .Values.securityContext.runAsUser }}
  runAsUser: {{ . }}
  {{- end }}
  allowPrivilegeEscalation: false
  privileged: false
  readOnlyRootFilesystem: true
  capabilities:
    drop:
      - ALL
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* Name of the storage Secret the pods and profiles refer to. */}}
{{- define "micropipe.storageSecretName" -}}
{{- default .Values.storage.secretName .Values.storage.existingSecret -}}
{{- end -}}

{{- define "micropipe.minioFullname" -}}
{{- printf "%s-minio" (include "micropipe.fullname" .) -}}
{{- end -}}

{{/* S3 endpoint written into the created Secret: the inline value, else the chart's MinIO. */}}
{{- define "micropipe.storageEndpoint" -}}
{{- if .Values.storage.endpoint -}}
{{- .Values.storage.endpoint -}}
{{- else if .Values.minio.enabled -}}
{{- printf "http://%s.%s.svc.cluster.local:%d" (include "micropipe.minioFullname" .) .Release.Namespace (int .Values.minio.port) -}}
{{- end -}}
{{- end -}}

{{/* Buckets the MinIO bucket Job creates: minio.buckets, else those of the profiles' data_root URIs. */}}
{{- define "micropipe.minioBuckets" -}}
{{- $buckets := list -}}
{{- if .Values.minio.buckets -}}
{{- $buckets = .Values.minio.buckets -}}
{{- else -}}
{{- range $name, $profile := .Values.profiles -}}
{{- if and $profile $profile.data_root -}}
{{- $buckets = append $buckets (regexReplaceAll "^[a-z0-9]+://([^/]+).*$" $profile.data_root "${1}") -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $buckets | uniq | sortAlpha | join " " -}}
{{- end -}}

{{/* One profile as pipelines/_kfp.py Profile.load reads it, storage_secret added; the env names are
those micropipe.store reads. Argument: (list $ $profile). */}}
{{- define "micropipe.profile" -}}
{{- $root := index . 0 -}}
{{- $profile := deepCopy (index . 1) -}}
{{- $keys := dict -}}
{{- $_ := set $keys $root.Values.storage.secretKeys.accessKey "AWS_ACCESS_KEY_ID" -}}
{{- $_ := set $keys $root.Values.storage.secretKeys.secretKey "AWS_SECRET_ACCESS_KEY" -}}
{{- $_ := set $keys $root.Values.storage.secretKeys.endpoint "MICROPIPE_S3_ENDPOINT" -}}
{{- $_ := set $profile "storage_secret" (dict "name" (include "micropipe.storageSecretName" $root) "keys" $keys) -}}
{{- toYaml $profile -}}
{{- end -}}

{{/* Combinations of values that cannot work; each stops the render with what to change. */}}
{{- define "micropipe.validate" -}}
{{- $s := .Values.storage -}}
{{- $inline := or $s.accessKey $s.secretKey $s.endpoint -}}
{{- if and $s.existingSecret $s.create -}}
{{- fail "storage.existingSecret and storage.create=true exclude each other: use the existing Secret, or let the chart create one" -}}
{{- end -}}
{{- if and $s.existingSecret $inline -}}
{{- fail "storage.existingSecret is set together with inline credentials (storage.accessKey/secretKey/endpoint): the Secret's values are used, so remove the inline ones" -}}
{{- end -}}
{{- if and $inline (not $s.create) -}}
{{- fail "storage.accessKey/secretKey/endpoint are set but storage.create is false: set storage.create=true to create the Secret from them, or use storage.existingSecret" -}}
{{- end -}}
{{- if $s.create -}}
{{- if not (and $s.accessKey $s.secretKey) -}}
{{- fail "storage.create=true needs storage.accessKey and storage.secretKey" -}}
{{- end -}}
{{- if not (include "micropipe.storageEndpoint" .) -}}
{{- fail "storage.create=true needs storage.endpoint (http(s)://host:port), or minio.enabled=true to point at the chart's MinIO" -}}
{{- end -}}
{{- end -}}
{{- $keys := list $s.secretKeys.accessKey $s.secretKeys.secretKey $s.secretKeys.endpoint -}}
{{- if ne (len ($keys | uniq)) 3 -}}
{{- fail (printf "storage.secretKeys must name three different keys, got %s" (join ", " $keys)) -}}
{{- end -}}
{{- if .Values.minio.enabled -}}
{{- if not (or $s.create $s.existingSecret) -}}
{{- fail "minio.enabled=true needs credentials for the MinIO root user: storage.create=true with storage.accessKey/secretKey, or storage.existingSecret" -}}
{{- end -}}
{{- if and $s.create (lt (len $s.accessKey) 3) -}}
{{- fail "minio.enabled=true: storage.accessKey is the MinIO root user and needs at least 3 characters" -}}
{{- end -}}
{{- if and $s.create (lt (len $s.secretKey) 8) -}}
{{- fail "minio.enabled=true: storage.secretKey is the MinIO root password and needs at least 8 characters" -}}
{{- end -}}
{{- if not (include "micropipe.minioBuckets" .) -}}
{{- fail "minio.enabled=true but no bucket to create: set minio.buckets, or a data_root in a profile" -}}
{{- end -}}
{{- end -}}
{{- $profiles := list -}}
{{- range $name, $profile := .Values.profiles -}}
{{- if $profile -}}
{{- $profiles = append $profiles $name -}}
{{- end -}}
{{- end -}}
{{- if .Values.upload.enabled -}}
{{- if not .Values.upload.kfpHost -}}
{{- fail "upload.enabled=true needs upload.kfpHost, the KFP API URL (e.g. http://ml-pipeline.kubeflow.svc.cluster.local:8888); or set upload.enabled=false" -}}
{{- end -}}
{{- if not (has .Values.upload.profile $profiles) -}}
{{- fail (printf "upload.profile %q is not a key of profiles; valid: %s" .Values.upload.profile (join ", " (sortAlpha $profiles))) -}}
{{- end -}}
{{- if and .Values.upload.multiUser (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) -}}
{{- fail "upload.multiUser=true with serviceAccount.create=false needs serviceAccount.name: the Role is bound to that account" -}}
{{- end -}}
{{- end -}}
{{- end -}}
