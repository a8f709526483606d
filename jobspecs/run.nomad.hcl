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

      config {
        image = "[[ image ]]"
        args  = [[ command | tojson ]]
        labels = [{
          "billowin.app"     = "[[ app ]]"
          "billowin.release" = "[[ release ]]"
          "billowin.process" = "run"
        }]
      }

      env {
        BILLOWIN_APP     = "[[ app ]]"
        BILLOWIN_RELEASE = "[[ release ]]"
        BILLOWIN_PROCESS = "run"
      }
[%- if config_template %]

      template {
        destination = "secrets/config.env"
        env         = true
        change_mode = "noop"
        data        = [[ config_template | tojson ]]
      }
[%- endif %]
[%- if vault_policies %]

      vault {
        policies = [[ vault_policies | tojson ]]
      }
[%- endif %]

      resources {
        cpu    = [[ cpu ]]
        memory = [[ memory ]]
      }
    }
  }
}
