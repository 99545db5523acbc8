"""The Kubernetes backend, without Airflow: manifests, pods, logs."""
