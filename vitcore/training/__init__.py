"""Training: setup through the Booster, the step, evaluation, the fine-tuning loop and parity probes
(`train`); torch.compile and the SDPA kernel as each entry's plan says (`compiled`); checkpoints and resume (`checkpoint`); the learning-rate schedule as a closed form
(`schedule`); and an independent plain-PyTorch loop sharing no code with `train` (`plain`), the
reference for training semantics and convergence; the suite's stand-in pretrained checkpoint
(`pretrain`) and whether pretrained weights survive boosting and transfer (`transfer`).
"""

__all__ = ["checkpoint", "compiled", "plain", "pretrain", "schedule", "train", "transfer"]
