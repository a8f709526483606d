[#- A build on a build node (BILLOWIN_BUILD_RUNNER=nomad): a batch job that runs Billowin's
    own build process (`python -m billowin.build.isolated`) once, with raw_exec, where the
    node's Docker Engine and build cache are. It survives the API: an API that restarts finds
    the job by its name (app and commit) and follows it again. The request (repository, and
    its token if any) is a Nomad Variable only this job's tasks may read; the result is a file
    in the allocation directory, which the API reads when the task ends. -#]
job "[[ job_id ]]" {
  type        = "batch"
  datacenters = ["*"]
  priority    = 40 # below the apps' (50): a build never preempts what serves

  meta = {
    "billowin.app"   = "[[ app ]]"
    "billowin.build" = "[[ sha ]]"
  }

  # Only nodes marked to build (`billowin install --build`, or a LocalCluster's first node).
  constraint {
    attribute = "${meta.billowin.build}"
    value     = "true"
  }

  group "build" {
    restart {
      attempts = 0
      mode     = "fail"
    }

    # A build node that dies takes its build with it: the pipeline fails the job and says so
    # (a new push, or `billowin deploy --sha`, builds again).
    reschedule {
      attempts  = 0
      unlimited = false
    }

    # The node's build cache (per-app dependency caches) is a host volume of that name.
    volume "cache" {
      type      = "host"
      source    = "billowin-build-cache"
      read_only = false
    }

    task "build" {
      driver = "raw_exec"

      template {
        destination = "${NOMAD_SECRETS_DIR}/request.json"
        perms       = "0600"
        data        = "{{ with nomadVar \"[[ variable ]]\" }}{{ .request }}{{ end }}"
      }

      config {
        command = [[ python | hcl ]]
        args    = ["-m", "billowin.build.isolated"]
      }

      env {
        # The node's build settings: its engine, registry credentials, state and cache dirs.
        BILLOWIN_SETTINGS_FILE       = "${meta.billowin.build_settings}"
        BILLOWIN_BUILD_REQUEST_FILE  = "${NOMAD_SECRETS_DIR}/request.json"
        BILLOWIN_BUILD_RESULT_FILE   = "${NOMAD_ALLOC_DIR}/billowin-build-result.json"
      }

      logs {
        max_files     = 2
        max_file_size = 20
      }

      kill_timeout = "30s"

      resources {
        cpu    = [[ cpu ]]
        memory = [[ memory ]]
      }
    }
  }
}
