"""Rewards for generation policies: protocol, registry, discriminators (``adanat.rewards``)."""

from adanat.rewards.adversarial import AdversarialReward, DiscriminatorTraining
from adanat.rewards.base import LearnedReward, Reward
from adanat.rewards.registry import RewardError, RewardOptions, make_reward, register, reward_names

__all__ = [
    "AdversarialReward",
    "DiscriminatorTraining",
    "LearnedReward",
    "Reward",
    "RewardError",
    "RewardOptions",
    "make_reward",
    "register",
    "reward_names",
]
