[#- A one-off run of an app's image (`billowin run`, and the Procfile `release`
    phase): a batch job that runs once, is never restarted or rescheduled, and
    is purged by Billowin once its output has been read. -#]
job "[[ job_id ]]" {
  type        = "batch"
  datacenters = ["*"]

  meta = {
    "billowin.app"     = "[[ app ]]"
    "billowin.release" = "[[ release ]]"
    "billowin.run"     = "[[ kind ]]"
  }

  group "run" {
    restart {
      attempts = 0
      mode     = "fail"
    }

    reschedule {
      attempts  = 0
      unlimited = false
    }

    task "run" {
      driver = "docker"

      logs {
        disabled = true
      }

      # The command goes in a file, not in `args`: Nomad would interpolate any
      # ${...} in the driver config, and the user's shell syntax must reach sh as typed.
      template {
        destination     = "local/billowin-run.sh"
        perms           = "0755"
        left_delimiter  = "[[ delimiter ]]{{"
        right_delimiter = "}}[[ delimiter ]]"
        data            = [[ script | hcl ]]
      }

      config {
        image = "[[ image ]]"
        # The apps' network (inter-container traffic off), as for the app's own instances.
        network_mode = "[[ network_mode | default("billowin-apps") ]]"
        args  = ["sh", "/local/billowin-run.sh"]
        labels = [{
          "billowin.app"     = "[[ app ]]"
          "billowin.release" = "[[ release ]]"
          "billowin.process" = "run"
        }]
        # Docker keeps the output (`billowin logs` reads it there): Nomad collects none,
        # which saves a logmon and a docker_logger (about 28 MB) per instance.
        logging {
          type = "local"
          config {
            max-size = "[[ log_max_size ]]"
            max-file = "[[ log_max_files ]]"
          }
        }
      }

      env {
        BILLOWIN_APP     = "[[ app ]]"
        BILLOWIN_RELEASE = "[[ release ]]"
        BILLOWIN_PROCESS = "run"
      }
[% include "config.hcl.partial" %]

      resources {
        cpu    = [[ cpu ]]
        memory = [[ memory ]]
      }
    }
  }
}
