"""The kernel manager of ``xprune-nb app``: at most ``max_kernels`` kernels at a time.

Voilà starts a fresh kernel for every page load, and jupyter_server sets no limit (Voilà's own
issue 617 asks for one), so anyone who can reach the page could start kernels until the machine
runs out of memory. ``xprune-nb app`` hands this class to Voilà
(``VoilaConfiguration.multi_kernel_manager_class``): a page load beyond the limit gets HTTP 503
("try again later") instead of a new kernel, and jupyter_server's idle culling
(``MappingKernelManager.cull_idle_timeout``) ends kernels whose page went away, which frees
their places. Only Voilà imports this module (it needs ``xprune_nb[classroom]``).
"""

from __future__ import annotations

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado import web
from traitlets import Integer

__all__ = ["LimitedKernelManager"]


class LimitedKernelManager(AsyncMappingKernelManager):
    """An ``AsyncMappingKernelManager`` that refuses a new kernel beyond ``max_kernels``."""

    max_kernels = Integer(10, min=1, config=True,
                          help="Most kernels running (or starting) at once; a page load "
                          "beyond them gets HTTP 503.")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._starting = 0     # kernels asked for and not yet listed (two loads at once)

    async def start_kernel(self, *, kernel_id=None, path=None, **kwargs):
        if kernel_id is None:     # a new kernel (a known id is a restart)
            if len(self.list_kernel_ids()) + self._starting >= self.max_kernels:
                self.log.warning("xprune-nb app: %d kernels are running (the limit, "
                                 "--max-kernels); a page load was refused", self.max_kernels)
                raise web.HTTPError(503, f"this page already serves {self.max_kernels} "
                                    "visitors (xprune-nb app --max-kernels); try again later")
            self._starting += 1
            try:
                return await super().start_kernel(kernel_id=kernel_id, path=path, **kwargs)
            finally:
                self._starting -= 1
        return await super().start_kernel(kernel_id=kernel_id, path=path, **kwargs)
