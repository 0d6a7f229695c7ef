"""nbgrader configuration for the xprune_nb classroom exercises (a template).

Copy it to the root of your course directory (the folder that holds ``source/``), set the
course id, and run nbgrader from there, in the environment xprune_nb is installed in:

    nbgrader generate_assignment lab1     # student versions in release/lab1/
    nbgrader autograde lab1 --create      # scores the hidden checks of each submission
    nbgrader formgrader                   # grade the written answers

See docs/classroom.md ("Handing out and marking").
"""

c = get_config()  # noqa: F821 - provided by nbgrader when it reads this file

c.CourseDirectory.course_id = "xprune-lab"      # your course's name
c.CourseDirectory.root = "."                     # this folder: source/, release/, submitted/

# The autograder cells of the exercises hold their check between BEGIN/END HIDDEN TESTS:
# students never see it (nor its traceback); autograde restores and runs it.
c.ClearHiddenTests.begin_test_delimeter = "BEGIN HIDDEN TESTS"
c.ClearHiddenTests.end_test_delimeter = "END HIDDEN TESTS"
# What replaces a solution region in the student version.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# The exercises train small models on the CPU; a slow laptop needs a few minutes per notebook.
c.ExecutePreprocessor.timeout = 300
c.Execute.timeout = 300

# For a shared exchange on a JupyterHub, uncomment and set:
# c.Exchange.root = "/srv/nbgrader/exchange"
