"""The public chains iExec runs on, for ``IExecBackend.for_chain``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["CHAINS", "DEFAULT_IPFS_GATEWAY", "IExecChain"]


@dataclass(frozen=True, slots=True)
class IExecChain:
    """A public chain iExec runs on: where its RPC, PoCo hub and IPFS gateway are."""

    name: str
    chain_id: int
    rpc_url: str
    hub_address: str
    ipfs_gateway: str


# Values from the iExec SDK's chain configuration (src/common/utils/config.js, `networkConfigs`):
# arbitrum-mainnet and arbitrum-sepolia-testnet as shipped in iexec 9.0.1; bellecour (chain 134,
# the iExec sidechain) as shipped in iexec 8.x, dropped from the SDK's presets in 9.0.
CHAINS: Mapping[str, IExecChain] = {
    chain.name: chain
    for chain in (
        IExecChain(
            "arbitrum-mainnet", 42161, "https://arb1.arbitrum.io/rpc",
            "0x098bFCb1E50ebcA0BaA92C12eA0c3F045A1aD9f0",
            "https://ipfs-gateway.arbitrum-mainnet.iex.ec",
        ),
        IExecChain(
            "arbitrum-sepolia-testnet", 421614, "https://sepolia-rollup.arbitrum.io/rpc",
            "0xB2157BF2fAb286b2A4170E3491Ac39770111Da3E",
            "https://ipfs-gateway.arbitrum-sepolia-testnet.iex.ec",
        ),
        IExecChain(
            "bellecour", 134, "https://bellecour.iex.ec",
            "0x3eca1B216A7DF1C7689aEb259fFB83ADFB894E7f",
            "https://ipfs-gateway.v8-bellecour.iex.ec",
        ),
    )
}
DEFAULT_IPFS_GATEWAY = CHAINS["arbitrum-mainnet"].ipfs_gateway


def chain_preset(chain: str | int) -> IExecChain | None:
    """The preset of ``chain``, by name or chain id (int or decimal text)."""
    return next(
        (c for c in CHAINS.values() if chain in (c.name, c.chain_id, str(c.chain_id))), None
    )
