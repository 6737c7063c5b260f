"""Evaluation beside the stages: did a round's policy beat the one it started from?"""
