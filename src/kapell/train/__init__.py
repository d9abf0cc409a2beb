"""Ray integration for TrainingJobs."""
