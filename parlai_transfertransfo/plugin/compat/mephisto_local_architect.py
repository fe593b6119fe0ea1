"""Patches `mephisto.abstractions.architects.local_architect`; the breakage is named in each docstring."""


def fix_local_architect_server_dir(local_architect):
    """Mephisto's local architect runs its node router from
    `site-packages/tmp/local_server_<task run id>` and starts it in a new process group:
    run ids restart at 1 in every fresh database, so two runs on one machine (or a run
    after an unclean stop, which leaves the folder behind) collide on the same folder, and
    the router outlives a killed Python process.  Run it under the run's own data
    directory, record its pid there (parlai_transfertransfo.crowdsourcing.environment
    stops a recorded orphan before the next launch) and have the kernel stop it when its
    parent dies."""
    from parlai_transfertransfo.crowdsourcing import environment

    local_architect.get_mephisto_tmp_dir = environment.server_tmp_dir
    deploy = local_architect.LocalArchitect.deploy
    shutdown = local_architect.LocalArchitect.shutdown

    def deploy_isolated(self):
        with environment.router_dies_with_parent(local_architect):
            url = deploy(self)
        environment.record_router(self.server_process_pid)
        return url

    def shutdown_isolated(self):
        try:
            shutdown(self)
        finally:
            environment.forget_router(self.server_process_pid)

    local_architect.LocalArchitect.deploy = deploy_isolated
    local_architect.LocalArchitect.shutdown = shutdown_isolated
